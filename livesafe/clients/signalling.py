"""The signalling both clients share: one WHIP/WHEP exchange, hang-up, connection wait, codec choice."""

from __future__ import annotations

import asyncio
import importlib.metadata
from urllib.parse import urljoin

import aiohttp
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from livesafe.relay.compat import accept_rsa_peers
from livesafe.relay.ice import IceSettings, apply_ice_settings


class ClientError(Exception):
    """The server refused or the media could not flow (message says which).

    ``status``: the HTTP status of a refusal (None: no answer, or the media failed),
    so a retrying client can tell "try again" (5xx, 429, no answer) from "you may not" (4xx).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def worth_retrying(self) -> bool:
        return self.status is None or self.status >= 500 or self.status == 429


def peer_connection(ice: IceSettings | None) -> RTCPeerConnection:
    ice = ice or IceSettings()
    apply_ice_settings(ice)  # host addresses and ports are process-wide in aioice
    accept_rsa_peers()
    return RTCPeerConnection(ice.rtc_configuration())


try:
    CLIENT_VERSION = importlib.metadata.version("livesafe")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    CLIENT_VERSION = "dev"


# A WHIP/WHEP exchange is one request; a relay that does not answer in this time is not coming back.
_SIGNALLING_TIMEOUT = aiohttp.ClientTimeout(total=30)


def user_agent(recording: bool = False) -> str:
    """Who we are to the relay; a recording viewer says so (policy profiles may refuse recorders)."""
    return f"livesafe-watch/{CLIENT_VERSION} (recording)" if recording else f"livesafe/{CLIENT_VERSION}"


# RFC 9725 section 4.5: a WHIP endpoint may redirect (a cluster sends publishers to the node that takes them).
_MAX_REDIRECTS = 5


async def negotiate(pc: RTCPeerConnection, url: str, token: str | None, agent: str = user_agent()) -> str:
    """POST our offer (every candidate in it), apply the answer; returns the session URL.

    A ``307``/``308`` is followed with the same offer and token, which aiohttp
    would drop on a redirect to another host: the token is meant for the
    service, whichever of its nodes answers.
    """
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp", "User-Agent": agent}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        async with aiohttp.ClientSession(timeout=_SIGNALLING_TIMEOUT) as http:
            for _ in range(_MAX_REDIRECTS + 1):
                async with http.post(
                    url, data=pc.localDescription.sdp, headers=headers, allow_redirects=False
                ) as response:
                    body = await response.text()
                    target = response.headers.get("Location")
                    if response.status in (307, 308) and target:
                        url = urljoin(url, target)
                        continue
                    if response.status != 201:
                        raise ClientError(
                            f"{url}: {response.status} {response.reason}: {body.strip()}", status=response.status
                        )
                    location = target
                    break
            else:
                raise ClientError(f"{url}: more than {_MAX_REDIRECTS} redirects")
    except aiohttp.ClientError as exc:
        raise ClientError(f"{url}: {exc}") from None
    except TimeoutError:
        raise ClientError(f"{url}: no answer within {_SIGNALLING_TIMEOUT.total:g} s") from None
    if not location:
        raise ClientError(f"{url}: 201 without a Location header")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return urljoin(url, location)


async def hang_up(resource: str | None, token: str | None) -> None:
    if resource is None:
        return
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with aiohttp.ClientSession(timeout=_SIGNALLING_TIMEOUT) as http:
            async with http.delete(resource, headers=headers) as response:
                await response.read()
    except (TimeoutError, aiohttp.ClientError):
        pass  # the server is gone or already closed the session: nothing left to hang up


async def connected(pc: RTCPeerConnection, timeout: float) -> None:
    if pc.connectionState == "connected":
        return
    done = asyncio.get_running_loop().create_future()

    @pc.on("connectionstatechange")
    def _changed() -> None:
        if pc.connectionState in ("connected", "failed", "closed") and not done.done():
            done.set_result(pc.connectionState)

    try:
        state = await asyncio.wait_for(done, timeout)
    except TimeoutError:
        raise ClientError(f"no WebRTC connection within {timeout:g} s (ICE could not reach the server)") from None
    if state != "connected":
        raise ClientError(f"WebRTC connection {state}")


def prefer_codec(pc: RTCPeerConnection, codec: str | None) -> None:
    if codec is None:
        return
    wanted = f"video/{codec.upper()}" if codec.lower() == "vp8" else "video/H264"
    capabilities = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in (wanted, "video/rtx")]
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "video":
            transceiver.setCodecPreferences(capabilities)
