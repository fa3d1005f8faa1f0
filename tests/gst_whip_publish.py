"""Publish a GStreamer test pattern over WHIP with GStreamer's own WebRTC stack (webrtcbin,
libnice, GStreamer's DTLS/SRTP).  Run with Debian's python3 (python3-gst-1.0):

    /usr/bin/python3 tests/gst_whip_publish.py URL TOKEN SECONDS [LOCAL_IP]

LOCAL_IP confines ICE to that address (libnice skips loopback unless told).

Why not Debian 12's ``whip-client`` (simple-whip-client): it links libsoup 2 while webrtcbin's
libnice pulls in libsoup 3 (through gupnp-igd), and libsoup aborts at start ("Using libsoup2 and
libsoup3 in the same process is not supported").  This is the same client logic in 80 lines:
one offer with every candidate, POST, apply the answer.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("Nice", "0.1")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC, Nice  # noqa: E402

PIPELINE = (
    "webrtcbin name=send bundle-policy=max-bundle "
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 ! videoconvert ! queue ! "
    # A keyframe every second, as a live encoder sends them: when the relay sheds a decoder backlog at
    # start-up it asks for one, and webrtcbin does not always pass that request (PLI) to vp8enc.
    "vp8enc deadline=1 target-bitrate=800000 keyframe-max-dist=30 ! rtpvp8pay pt=96 ! "
    "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000 ! send. "
    "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! queue ! opusenc ! rtpopuspay pt=111 ! "
    "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! send."
)


def main(url: str, token: str, seconds: float, local_ip: str | None) -> int:
    Gst.init(None)
    pipeline = Gst.parse_launch(PIPELINE)
    webrtc = pipeline.get_by_name("send")
    result: dict = {"code": 0}
    if local_ip:
        address = Nice.Address.new()
        address.set_from_string(local_ip)
        # Kept alive (and referenced once more) for the whole run: PyGObject releases a
        # reference it never took on this property's object (GStreamer 1.22).
        result["ice"] = webrtc.get_property("ice-agent")
        result["ice"].get_property("agent").add_local_address(address)
    loop = GLib.MainLoop()

    def fail(message: str) -> None:
        print(f"gst_whip_publish: {message}", file=sys.stderr, flush=True)
        result["code"] = 1
        loop.quit()

    def post_offer() -> bool:
        offer = webrtc.get_property("local-description").sdp.as_text()
        request = urllib.request.Request(
            url, data=offer.encode(), method="POST",
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = response.read().decode()
                result["resource"] = urllib.parse.urljoin(url, response.headers["Location"])
                print(f"gst_whip_publish: {response.status} {result['resource']}", flush=True)
        except urllib.error.HTTPError as exc:
            fail(f"{exc.code} {exc.read().decode().strip()}")
            return False
        _, sdp = GstSdp.SDPMessage.new_from_text(answer)
        description = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        webrtc.emit("set-remote-description", description, Gst.Promise.new())
        return False

    def on_gathering(element: Gst.Element, _param: object) -> None:
        if element.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(post_offer)  # no trickle: the offer now holds every candidate

    def create_offer() -> bool:
        # Once both streams are linked (on-negotiation-needed fires per stream, and an offer
        # made while the first is being set fails).
        promise = Gst.Promise.new()
        webrtc.emit("create-offer", None, promise)
        promise.wait()
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None and reply.has_field("offer") else None
        if offer is None or offer.sdp is None:
            fail(f"webrtcbin made no offer: {reply.to_string() if reply else 'no reply'}")
            return False
        done = Gst.Promise.new()
        webrtc.emit("set-local-description", offer, done)
        done.wait()
        return False

    webrtc.connect("notify::ice-gathering-state", on_gathering)
    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message::error", lambda _bus, message: fail(str(message.parse_error()[0])))
    pipeline.set_state(Gst.State.PLAYING)
    GLib.timeout_add(500, create_offer)
    GLib.timeout_add(int(seconds * 1000), loop.quit)
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    if "resource" in result:  # hang up
        hang_up = urllib.request.Request(
            result["resource"], method="DELETE", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(hang_up, timeout=10):
            pass
    return result["code"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None))
