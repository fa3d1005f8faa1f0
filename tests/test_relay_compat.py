"""livesafe.relay.compat: each hook into aiortc/aioice is installed, does what the relay
relies on against the real classes, installs once, and an upgrade that removes what a
hook needs stops the relay at import instead of quietly losing the hook."""

from __future__ import annotations

import asyncio
import logging
import queue
import socket
from types import SimpleNamespace

import aioice.ice
import pytest
from aiortc.rtcdtlstransport import SRTP_PROFILES, RTCCertificate
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket
from OpenSSL import SSL

from livesafe.relay import compat

OPEN_TRANSPORT = SimpleNamespace(state="new")  # all RTCRtpSender/Receiver check at construction


# ------------------------------------------------------------ version check


def test_the_installed_versions_pass_the_check_quietly(caplog):
    compat.verify()
    with caplog.at_level(logging.WARNING, logger=compat.__name__):
        for package, ((major, minor), _) in compat.TESTED.items():
            assert not compat.warn_if_untested(package, f"{major}.{minor}.0")
    assert not caplog.records


def test_an_untested_version_is_warned_about_once(monkeypatch, caplog):
    monkeypatch.setattr(compat, "_warned", set())
    with caplog.at_level(logging.WARNING, logger=compat.__name__):
        assert compat.warn_if_untested("aiortc", "99.0.0")
        assert compat.warn_if_untested("aiortc", "99.0.0")
        assert compat.warn_if_untested("aioice", "0.1.dev3")
    assert [r.getMessage().split(" ")[:2] for r in caplog.records] == [["aiortc", "99.0.0"], ["aioice", "0.1.dev3"]]


@pytest.mark.parametrize(
    "owner, name",
    [
        (RTCCertificate, "_create_ssl_context"),
        (RTCRtpSender, "_send_keyframe"),
        (RTCRtpReceiver, "_send_rtcp_pli"),
        (aioice.ice, "get_host_addresses"),
    ],
)
def test_a_missing_attribute_fails_loudly(monkeypatch, owner, name):
    monkeypatch.delattr(owner, name)
    with pytest.raises(compat.CompatError, match=f"{name} is gone; livesafe.relay.compat needs updating for aiortc"):
        compat.verify()


def test_a_decoder_queue_no_longer_made_by_the_receiver_fails_loudly(monkeypatch):
    def init(self, kind, transport):  # type: ignore[no-untyped-def]
        self._RTCRtpReceiver__frames = queue.Queue()  # say, renamed

    monkeypatch.setattr(RTCRtpReceiver, "__init__", init)
    with pytest.raises(compat.CompatError, match="RTCRtpReceiver.__init__ no longer uses _RTCRtpReceiver__decoder_q"):
        compat.verify()


def test_aioice_no_longer_binding_through_the_loop_fails_loudly(monkeypatch):
    async def get_component_candidates(self, component, addresses, timeout=5):  # type: ignore[no-untyped-def]
        return []

    monkeypatch.setattr(aioice.ice.Connection, "get_component_candidates", get_component_candidates)
    with pytest.raises(compat.CompatError, match="no longer uses create_datagram_endpoint"):
        compat.verify()


# --------------------------------------------------------------------- DTLS


def _ciphers(certificate: RTCCertificate) -> list[str]:
    return SSL.Connection(certificate._create_ssl_context(SRTP_PROFILES), None).get_cipher_list()


def test_rsa_peers_are_accepted_once_patched_and_the_patch_installs_once(monkeypatch):
    monkeypatch.setattr(RTCCertificate, "_create_ssl_context", compat._aiortc_ssl_context)
    certificate = RTCCertificate.generateCertificate()
    assert not any("-RSA-" in c for c in _ciphers(certificate)), "aiortc alone: ECDSA suites only"
    compat.accept_rsa_peers()
    patched = RTCCertificate._create_ssl_context
    compat.accept_rsa_peers()
    assert RTCCertificate._create_ssl_context is patched, "idempotent: not wrapped twice"
    dtls12 = [c for c in _ciphers(certificate) if not c.startswith("TLS_")]  # TLS_*: 1.3, which DTLS 1.2 does not use
    rsa = compat.RSA_SUITES.decode().split(":")
    assert dtls12[-len(rsa) :] == rsa and all(c.startswith("ECDHE-ECDSA-") for c in dtls12[: -len(rsa)])


# ---------------------------------------------------------------------- ICE


def test_routed_host_addresses_are_what_aioice_gathers_on(monkeypatch):
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    compat.route_host_addresses(lambda use_ipv4, use_ipv6: ["192.0.2.7"] if use_ipv4 else [])
    assert aioice.ice.get_host_addresses(True, False) == ["192.0.2.7"]
    assert compat.aioice_host_addresses is not aioice.ice.get_host_addresses, "aioice's own stays reachable"


async def test_port_zero_binds_take_an_allowed_port_and_the_hook_installs_once(monkeypatch):
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "create_datagram_endpoint", loop.create_datagram_endpoint)
    monkeypatch.setattr(loop, "_livesafe_port_range", False, raising=False)
    allowed: list[int] | None = [_free_port(), _free_port()]
    compat.bind_udp_ports(loop, lambda: allowed)
    hooked = loop.create_datagram_endpoint
    compat.bind_udp_ports(loop, lambda: None)
    assert loop.create_datagram_endpoint is hooked, "idempotent: wrapped once, the first ports() stays"

    async def bound(port: int = 0) -> int:
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", port))
        transports.append(transport)
        return transport.get_extra_info("sockname")[1]

    transports: list[asyncio.DatagramTransport] = []
    try:
        assert sorted([await bound(), await bound()]) == sorted(allowed)
        with pytest.raises(OSError, match=f"no free UDP port in {min(allowed)}-{max(allowed)} on 127.0.0.1"):
            await bound()  # both taken
        explicit = _free_port()
        assert await bound(explicit) == explicit, "binds to a given port are left alone"
        allowed = None
        assert await bound() not in (explicit, 0), "ports() None: the kernel chooses"
    finally:
        for transport in transports:
            transport.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ receiver


async def test_the_decoder_queue_is_drained_but_keeps_aiortcs_stop_sentinel():
    receiver = RTCRtpReceiver("video", OPEN_TRANSPORT)
    backlog = receiver._RTCRtpReceiver__decoder_queue
    for i in range(5):
        backlog.put(("vp8", i))
    backlog.put(None)
    assert compat.decoder_backlog(receiver) == 6
    assert compat.drain_decoder_queue(receiver) == 5
    assert compat.decoder_backlog(receiver) == 1 and backlog.get_nowait() is None
    assert compat.drain_decoder_queue(receiver) == 0, "an empty queue"


def test_vp8_frames_decoded_from_keyframes_say_so():
    """FFmpeg's libvpx decoder leaves key_frame False on every frame; after the hook it follows the stream."""
    import fractions

    import aiortc.rtcrtpreceiver
    import av
    import numpy as np
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    compat.mark_vp8_keyframes()
    compat.mark_vp8_keyframes()  # idempotent: one wrapper, not two
    vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    decoder = aiortc.rtcrtpreceiver.get_decoder(vp8)
    assert not isinstance(getattr(decoder, "_decoder", None), type(decoder)), "wrapped once"
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 64, 48, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 30)
    encoder.options = {"g": "8", "lag-in-frames": "0"}
    sent, decoded = [], []
    rng = np.random.default_rng(1)
    for i in range(20):
        frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), np.uint8), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = i
        for packet in encoder.encode(frame):
            sent.append(packet.is_keyframe)
            decoded += [f.key_frame for f in decoder.decode(JitterFrame(data=bytes(packet), timestamp=i * 3000))]
    assert sent.count(True) >= 3 and decoded == sent
    h264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102)
    assert type(aiortc.rtcrtpreceiver.get_decoder(h264)).__name__ == "H264Decoder", "H.264 is left alone"


async def test_a_pli_goes_to_every_source_the_receiver_hears(monkeypatch):
    receiver = RTCRtpReceiver("video", OPEN_TRANSPORT)
    sent = []

    async def send_rtcp_pli(media_ssrc: int) -> None:
        sent.append(media_ssrc)

    monkeypatch.setattr(receiver, "_send_rtcp_pli", send_rtcp_pli)
    sources = [SimpleNamespace(source=11), SimpleNamespace(source=22)]
    monkeypatch.setattr(receiver, "getSynchronizationSources", lambda: sources)
    await compat.send_pli(receiver)
    assert sent == [11, 22]


# -------------------------------------------------------------------- sender


async def test_a_viewers_pli_reaches_the_routed_keyframe_request():
    sender = RTCRtpSender("video", OPEN_TRANSPORT)
    requests: list[str] = []
    compat.route_keyframe_requests(sender, lambda: requests.append("first"))
    compat.route_keyframe_requests(sender, lambda: requests.append("second"))
    await sender._handle_rtcp_packet(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=sender._ssrc))
    assert requests == ["second"], "aiortc's RTCP handling calls the route; the last routing wins"
