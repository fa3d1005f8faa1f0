"""ICE settings: which STUN/TURN servers, which host addresses, which UDP ports.

aiortc, left alone, asks Google's public STUN server and offers a candidate on
every non-loopback interface.  A safety proxy must not phone home, and behind
NAT it should announce the one public address its viewers can reach.  aiortc
has no knobs for host addresses or ports, so :func:`apply_ice_settings`
installs them process-wide on aioice, the ICE library under aiortc (the
patching itself is in :mod:`livesafe.relay.compat`):

- ``host_addresses``: the addresses gathered as host candidates (aioice's own
  list excludes 127.0.0.1, which would leave a loopback-only host with none);
- ``announce``: local address -> address written into the SDP instead (1:1
  NAT, like Janus's ``nat_1_1_mapping``); connectivity checks still work
  because aioice answers them on the socket, whatever address was dialled;
- ``udp_ports``: the range host-candidate sockets bind in, for firewalls.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from dataclasses import dataclass, field

from aiortc import RTCConfiguration, RTCIceServer

from livesafe.relay import compat

_aioice_host_addresses = compat.aioice_host_addresses


@dataclass(frozen=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for url in self.urls:
            if not url.startswith(("stun:", "turn:", "turns:")):
                # aiortc has no stuns: (STUN over TLS); it would be ignored without a word.
                raise ValueError(f"ICE server URL {url!r} must start with stun:, turn: or turns:")
            if url.startswith("turn") and (self.username is None or self.credential is None):
                raise ValueError(f"TURN server {url!r} needs a username and a credential")


@dataclass(frozen=True)
class IceSettings:
    servers: tuple[IceServer, ...] = ()  # none by default: no STUN request leaves the machine
    host_addresses: tuple[str, ...] = ()  # empty: every interface's address (127.0.0.1 if that is all)
    announce: dict[str, str] = field(default_factory=dict)  # local address -> address to advertise
    udp_ports: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for address in (*self.host_addresses, *self.announce, *self.announce.values()):
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"{address!r} is not an IP address") from None
        for scheme in ("stun", "turn"):
            if sum(any(u.startswith(scheme) for u in server.urls) for server in self.servers) > 1:
                # aiortc (aioice) takes the first of each and would drop the rest silently.
                raise ValueError(f"at most one {scheme.upper()} server: aiortc uses only the first")
        if self.udp_ports is not None:
            low, high = self.udp_ports
            if not (1024 <= low <= high <= 65535):
                raise ValueError(f"udp_ports {list(self.udp_ports)}: expected [low, high] within 1024..65535")

    def rtc_configuration(self) -> RTCConfiguration:
        # An explicit empty list: aiortc substitutes Google's STUN server for None.
        servers = [RTCIceServer(list(s.urls), s.username, s.credential) for s in self.servers]
        return RTCConfiguration(iceServers=servers)

    def link_headers(self) -> list[str]:
        """RFC 9725 section 4.6: tell WHIP/WHEP clients which ICE servers to use."""
        links = []
        for server in self.servers:
            for url in server.urls:
                link = f'<{url}>; rel="ice-server"'
                if server.username is not None:
                    link += (
                        f'; username="{server.username}"; credential="{server.credential}"; credential-type="password"'
                    )
                links.append(link)
        return links

    def rewrite_sdp(self, sdp: str) -> str:
        """Replace announced addresses in candidate lines and c= lines."""
        if not self.announce:
            return sdp
        lines = []
        for line in sdp.split("\r\n"):
            if line.startswith("a=candidate:"):
                parts = line.split(" ")
                if len(parts) > 5 and parts[4] in self.announce:
                    parts[4] = self.announce[parts[4]]
                line = " ".join(parts)
            elif line.startswith("c=IN "):
                parts = line.split(" ")
                if len(parts) == 3 and parts[2] in self.announce:
                    parts[2] = self.announce[parts[2]]
                line = " ".join(parts)
            lines.append(line)
        return "\r\n".join(lines)


_active = IceSettings()


def apply_ice_settings(settings: IceSettings) -> None:
    """Make ``settings`` the host-address and port policy of every peer connection in this process."""
    global _active
    _active = settings
    compat.route_host_addresses(_host_addresses)


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _active.host_addresses:
        wanted = [a for a in _active.host_addresses if (use_ipv6 if ":" in a else use_ipv4)]
    else:
        wanted = _aioice_host_addresses(use_ipv4, use_ipv6) or (["127.0.0.1"] if use_ipv4 else [])
    if _active.udp_ports is not None:
        compat.bind_udp_ports(asyncio.get_running_loop(), _ports_to_try)
    return wanted


def _ports_to_try() -> list[int] | None:
    """The ``udp_ports`` range in random order (so that sockets do not all contend for the lowest), if set."""
    if _active.udp_ports is None:
        return None
    low, high = _active.udp_ports
    ports = list(range(low, high + 1))
    random.shuffle(ports)
    return ports
