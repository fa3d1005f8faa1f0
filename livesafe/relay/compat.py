"""Every reach into aiortc's and aioice's private parts, in one place.

The relay needs a few things neither library offers as API (aiortc keeps such
helpers in ``aiortc.contrib``; these are ours):

- DTLS with RSA peers: aiortc offers only ECDSA cipher suites
  (:func:`accept_rsa_peers`);
- ICE host addresses and UDP ports: aioice has no knobs for either
  (:func:`route_host_addresses`, :func:`bind_udp_ports`; the policy is in
  :mod:`livesafe.relay.ice`);
- shedding aiortc's unbounded decoder queue under overload and asking the
  publisher for a keyframe afterwards (:func:`decoder_backlog`,
  :func:`drain_decoder_queue`, :func:`send_pli`), and telling that keyframe
  apart: FFmpeg's libvpx decoder leaves ``key_frame`` unset on every VP8
  frame it decodes (:func:`mark_vp8_keyframes`);
- keyframe requests from viewers: aiortc hands a PLI/FIR to its own encoder,
  which our senders (forwarding already-encoded packets) do not have
  (:func:`route_keyframe_requests`).

Everything here was written against :data:`TESTED`.  On another version a
warning is logged once; if something this module relies on is gone, importing
it raises :class:`CompatError`.  Loudly, not silently, because every hook
carries a safety or latency property and a quiet no-op would lose it where
nobody looks: without the decoder shedding an overloaded stream falls seconds
behind (and the overload controller cuts it), without the keyframe marks a
VP8 stream that was shed once waits for a keyframe it cannot see, without keyframe routing a
viewer that lost a packet stays broken until the 100 s safety keyframe,
without the host-address hook the relay announces every interface and ignores
the configured ports, without the RSA suites GStreamer publishers fail with
"Fatal SSL error".  Better the relay refuses to start on an upgrade.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import queue
from collections.abc import Callable
from typing import Any

import aioice.ice
import aiortc.rtcrtpreceiver
from aiortc.rtcdtlstransport import RTCCertificate
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

log = logging.getLogger(__name__)

# package -> (oldest, newest) (major, minor) this module was tested with, inclusive.
TESTED: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "aiortc": ((1, 16), (1, 16)),
    "aioice": ((0, 13), (0, 13)),
}
_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"  # RTCRtpReceiver.__decoder_queue, name-mangled
_ECDSA_SUITES = (  # aiortc's own list
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"
)
RSA_SUITES = b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA"
_warned: set[str] = set()


class CompatError(RuntimeError):
    """aiortc or aioice no longer has what a hook here relies on."""


# ------------------------------------------------------------ version check


def warn_if_untested(package: str, version: str) -> bool:
    """Log a warning (once per package and process) if ``version`` is outside :data:`TESTED`; True if it is."""
    low, high = TESTED[package]
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        major_minor = ()
    if low <= major_minor <= high:
        return False
    if package not in _warned:
        _warned.add(package)
        log.warning(
            "%s %s is untested with livesafe (tested: %d.%d to %d.%d); its private parts this relay patches "
            "are checked, their behaviour is not",
            package,
            version,
            *low,
            *high,
        )
    return True


def verify() -> None:
    """Raise :class:`CompatError` unless everything a hook here patches or calls is where it was.

    Runs at import.  Where an attribute exists only on instances (the decoder
    queue), or where patching a name works only because aioice looks it up at
    call time, the code that uses the name is checked instead.
    """
    _require(RTCCertificate, "_create_ssl_context")
    _require(RTCRtpSender, "_send_keyframe")
    _require(RTCRtpReceiver, "_send_rtcp_pli")
    _require(RTCRtpReceiver, "getSynchronizationSources")
    _require_use(RTCRtpReceiver, "__init__", _DECODER_QUEUE)
    _require(aiortc.rtcrtpreceiver, _GET_DECODER)
    _require_use(aiortc.rtcrtpreceiver, "decoder_worker", _GET_DECODER)
    _require(aioice.ice, "get_host_addresses")
    _require(aioice.ice, "Connection")
    _require_use(aioice.ice.Connection, "gather_candidates", "get_host_addresses")
    _require_use(aioice.ice.Connection, "get_component_candidates", "create_datagram_endpoint")


def _require(owner: Any, name: str) -> None:
    if not hasattr(owner, name):
        raise CompatError(f"{owner.__name__}.{name} is gone; {_upgrade_hint()}")


def _require_use(owner: Any, function: str, name: str) -> None:
    """``owner.function`` must still use ``name`` (an attribute it reads, writes or calls)."""
    code = getattr(getattr(owner, function, None), "__code__", None)
    if code is None or name not in code.co_names:
        raise CompatError(f"{owner.__name__}.{function} no longer uses {name}; {_upgrade_hint()}")


def _upgrade_hint() -> str:
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in TESTED)
    return f"livesafe.relay.compat needs updating for {versions}"


# --------------------------------------------------------------------- DTLS

_aiortc_ssl_context = RTCCertificate._create_ssl_context


def accept_rsa_peers() -> None:
    """Let peers with RSA DTLS certificates in; idempotent, process-wide (every later handshake).

    In DTLS the cipher suite's signature algorithm follows the *server's*
    certificate.  aiortc lists only ``ECDHE-ECDSA-*`` suites, which is fine
    when it is the DTLS server or the peer is a browser (ECDSA certificates),
    but when aiortc is the client of a peer whose certificate is RSA --
    GStreamer's webrtcbin, for one -- no suite is common and the handshake dies
    with "Fatal SSL error".  Adding the ECDHE-RSA equivalents fixes it without
    weakening anything (forward-secret AEAD/AES suites only).
    """
    if getattr(RTCCertificate._create_ssl_context, "_livesafe", False):
        return

    def create_ssl_context(self, srtp_profiles):  # type: ignore[no-untyped-def]
        context = _aiortc_ssl_context(self, srtp_profiles)
        context.set_cipher_list(_ECDSA_SUITES + b":" + RSA_SUITES)
        return context

    create_ssl_context._livesafe = True  # type: ignore[attr-defined]
    RTCCertificate._create_ssl_context = create_ssl_context  # type: ignore[method-assign]


# ---------------------------------------------------------------------- ICE

aioice_host_addresses = aioice.ice.get_host_addresses  # aioice's own choice, whatever is routed later


def route_host_addresses(host_addresses: Callable[[bool, bool], list[str]]) -> None:
    """Make ``host_addresses(use_ipv4, use_ipv6)`` the addresses every ICE agent in this process gathers on."""
    aioice.ice.get_host_addresses = host_addresses  # type: ignore[assignment]  # same call, other parameter names


def bind_udp_ports(loop: asyncio.AbstractEventLoop, ports: Callable[[], list[int] | None]) -> None:
    """Make this loop's port-0 UDP binds (aioice's host sockets) take the first free port of ``ports()``.

    ``ports()`` is asked at each bind (``None``: let the kernel choose); when
    none is free the bind fails with ``OSError``, which aioice takes as no
    candidate on that address.  Idempotent per loop.
    """
    if getattr(loop, "_livesafe_port_range", False):
        return
    original = loop.create_datagram_endpoint

    async def create_datagram_endpoint(protocol_factory: Any, local_addr: Any = None, **kwargs: Any) -> Any:
        allowed = ports() if local_addr is not None and local_addr[1] == 0 else None
        if allowed is None:
            return await original(protocol_factory, local_addr=local_addr, **kwargs)
        for port in allowed:
            try:
                return await original(protocol_factory, local_addr=(local_addr[0], port), **kwargs)
            except OSError:
                continue
        span = f"{min(allowed)}-{max(allowed)}" if allowed else "an empty range"
        raise OSError(f"no free UDP port in {span} on {local_addr[0]}")

    loop.create_datagram_endpoint = create_datagram_endpoint  # type: ignore[assignment]  # a wrapper with its signature
    loop._livesafe_port_range = True  # type: ignore[attr-defined]


# ------------------------------------------------------------------ receiver


def decoder_backlog(receiver: RTCRtpReceiver) -> int:
    """Encoded frames waiting in aiortc's (unbounded) decoder queue."""
    backlog: queue.Queue[Any] = getattr(receiver, _DECODER_QUEUE)
    return backlog.qsize()


def drain_decoder_queue(receiver: RTCRtpReceiver) -> int:
    """Discard what waits in aiortc's decoder queue (keeping its stop sentinel); returns how many frames went."""
    backlog: queue.Queue[Any] = getattr(receiver, _DECODER_QUEUE)
    shed = 0
    try:
        while True:
            item = backlog.get_nowait()
            if item is None:  # aiortc's stop sentinel must stay
                backlog.put(None)
                break
            shed += 1
    except queue.Empty:
        pass
    return shed


_GET_DECODER = "get_decoder"  # aiortc.rtcrtpreceiver imports it from aiortc.codecs, not as its own API
_aiortc_get_decoder = getattr(aiortc.rtcrtpreceiver, _GET_DECODER)


class _Vp8KeyframeMarks:
    """aiortc's VP8 decoder, marking the frames decoded from keyframes as such.

    A VP8 frame's first byte says whether it is a keyframe (RFC 6386 §9.1:
    bit 0 of the frame tag, 0 for a key frame); aiortc's ``JitterFrame`` holds
    the whole depacketised frame, so the bit is right there.
    """

    def __init__(self, decoder: Any) -> None:
        self._decoder = decoder

    def decode(self, encoded_frame: Any) -> list[Any]:
        frames: list[Any] = self._decoder.decode(encoded_frame)
        if encoded_frame.data and not encoded_frame.data[0] & 1:
            for frame in frames:
                frame.key_frame = True
        return frames


def mark_vp8_keyframes() -> None:
    """Make aiortc's decoded VP8 frames say whether they are keyframes, as H.264's do; idempotent, process-wide.

    The ingest drops what is decoded after a shed until a keyframe arrives; with
    ``key_frame`` always False on VP8 (FFmpeg's libvpx wrapper never sets it)
    it would wait for ever.  aiortc looks ``get_decoder`` up in its module each
    time a receiver's decoder thread starts, so patching it reaches every
    receiver created afterwards.
    """
    if getattr(getattr(aiortc.rtcrtpreceiver, _GET_DECODER), "_livesafe", False):
        return

    def get_decoder(codec: Any) -> Any:
        decoder = _aiortc_get_decoder(codec)
        return _Vp8KeyframeMarks(decoder) if codec.mimeType.lower() == "video/vp8" else decoder

    get_decoder._livesafe = True  # type: ignore[attr-defined]
    setattr(aiortc.rtcrtpreceiver, _GET_DECODER, get_decoder)


async def send_pli(receiver: RTCRtpReceiver) -> None:
    """Ask the publisher for a keyframe (RTCP PLI) on every source the receiver hears."""
    for source in receiver.getSynchronizationSources():
        await receiver._send_rtcp_pli(source.source)


# -------------------------------------------------------------------- sender


def route_keyframe_requests(sender: RTCRtpSender, request: Callable[[], None]) -> None:
    """Call ``request()`` when this sender's viewer asks for a keyframe (PLI/FIR); the last routing wins.

    aiortc answers PLI/FIR by flagging its own encoder; a sender that
    forwards already-encoded packets has none, so without this the request
    would be dropped.
    """
    sender._send_keyframe = request  # type: ignore[method-assign]


def _check_at_import() -> None:
    verify()
    for package in TESTED:
        warn_if_untested(package, importlib.metadata.version(package))


_check_at_import()
