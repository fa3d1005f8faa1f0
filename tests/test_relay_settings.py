"""Relay settings without media: ICE configuration (servers, host addresses, announced
addresses, UDP port range), who may publish and watch, and the [server]/[streams]
part of the TOML configuration with its error messages."""

from __future__ import annotations

import re
import socket

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtcicetransport import RTCIceGatherer
from harness import ICE, config_error, config_from

from livesafe.relay.ice import IceServer, IceSettings, _aioice_host_addresses, apply_ice_settings
from livesafe.relay.settings import RelaySettings, StreamAccess

# ------------------------------------------------------------------ helpers


@pytest.fixture
def ice_policy():
    """Apply IceSettings process-wide for one test; loopback-only settings come back afterwards."""
    yield apply_ice_settings
    apply_ice_settings(ICE)


async def _gathered_candidates(config_ice: IceSettings, transceivers: int = 1) -> list[tuple[str, int, str]]:
    """(address, port, type) of every candidate in a fresh offer."""
    pc = RTCPeerConnection(config_ice.rtc_configuration())
    try:
        for _ in range(transceivers):
            pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        return _candidates(pc.localDescription.sdp)
    finally:
        await pc.close()


def _candidates(sdp: str) -> list[tuple[str, int, str]]:
    found = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            found.append((parts[4], int(parts[5]), parts[parts.index("typ") + 1]))
    return found


# ---------------------------------------------------------------- ICE servers


def test_no_stun_server_by_default():
    config = IceSettings().rtc_configuration()
    assert config.iceServers == []
    # An explicit empty list really means "none": aiortc puts Google's STUN server in for None.
    assert RTCIceGatherer(iceServers=config.iceServers)._connection.stun_server is None
    assert RTCIceGatherer(iceServers=None)._connection.stun_server is not None
    assert IceSettings().link_headers() == []


def test_configured_servers_reach_aiortc_and_link_headers():
    ice = IceSettings(
        servers=(
            IceServer(("stun:127.0.0.1:3478",)),
            IceServer(("turn:127.0.0.1:3478?transport=udp",), username="user", credential="pass"),
        )
    )
    config = ice.rtc_configuration()
    assert [s.urls for s in config.iceServers] == [["stun:127.0.0.1:3478"], ["turn:127.0.0.1:3478?transport=udp"]]
    assert (config.iceServers[1].username, config.iceServers[1].credential) == ("user", "pass")
    connection = RTCIceGatherer(iceServers=config.iceServers)._connection
    assert connection.stun_server == ("127.0.0.1", 3478)
    assert connection.turn_server == ("127.0.0.1", 3478)
    assert ice.link_headers() == [
        '<stun:127.0.0.1:3478>; rel="ice-server"',
        (
            '<turn:127.0.0.1:3478?transport=udp>; rel="ice-server"; username="user"; credential="pass"; '
            'credential-type="password"'
        ),
    ]


@pytest.mark.parametrize(
    "url", ["http://stun.example.com", "stun.example.com:3478", "", "STUN:example.com", "stuns:example.com"]
)
def test_ice_server_url_must_be_stun_or_turn(url):
    with pytest.raises(ValueError, match="must start with stun:, turn: or turns:"):
        IceServer((url,))


@pytest.mark.parametrize("username, credential", [(None, None), ("user", None), (None, "pass")])
@pytest.mark.parametrize("url", ["turn:127.0.0.1:3478", "turns:turn.example.com:5349"])
def test_turn_needs_username_and_credential(url, username, credential):
    with pytest.raises(ValueError, match="needs a username and a credential"):
        IceServer((url,), username, credential)


def test_stun_needs_no_credentials():
    assert IceServer(("stun:127.0.0.1:3478",)).username is None


def test_more_than_one_stun_or_turn_server_is_refused_not_silently_dropped():
    stun = (IceServer(("stun:127.0.0.1:3478",)), IceServer(("stun:127.0.0.2:3478",)))
    with pytest.raises(ValueError, match="at most one STUN server"):
        IceSettings(servers=stun)
    turn = tuple(IceServer((f"turn:127.0.0.{i}:3478",), "u", "p") for i in (1, 2))
    with pytest.raises(ValueError, match="at most one TURN server"):
        IceSettings(servers=turn)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"host_addresses": ("localhost",)}, "'localhost' is not an IP address"),
        ({"host_addresses": ("10.0.0.300",)}, "'10.0.0.300' is not an IP address"),
        ({"announce": {"eth0": "203.0.113.7"}}, "'eth0' is not an IP address"),
        ({"announce": {"10.0.0.5": "example.com"}}, "'example.com' is not an IP address"),
        ({"udp_ports": (1000, 2000)}, r"udp_ports \[1000, 2000\]"),
        ({"udp_ports": (5000, 4000)}, r"udp_ports \[5000, 4000\]"),
        ({"udp_ports": (40000, 70000)}, r"udp_ports \[40000, 70000\]"),
    ],
)
def test_ice_settings_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IceSettings(**kwargs)


# ------------------------------------------------------------- rewrite_sdp

ANSWER = "\r\n".join(
    [
        "v=0",
        "o=- 3900000000 3900000000 IN IP4 10.0.0.5",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "m=video 40001 UDP/TLS/RTP/SAVPF 97",
        "c=IN IP4 10.0.0.5",
        "a=candidate:1 1 udp 2130706431 10.0.0.5 40001 typ host",
        "a=candidate:2 1 udp 2130706431 10.0.0.6 40002 typ host",
        "a=candidate:3 1 udp 1694498815 198.51.100.1 40003 typ srflx raddr 10.0.0.5 rport 40001",
        "a=rtcp:9 IN IP4 10.0.0.5",
        "m=audio 40004 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 10.0.0.6",
        "a=candidate:4 1 udp 2130706431 10.0.0.5 40004 typ host",
        "a=end-of-candidates",
        "",
    ]
)


def test_rewrite_sdp_without_announce_is_the_identity():
    assert IceSettings().rewrite_sdp(ANSWER) is ANSWER


def test_rewrite_sdp_replaces_announced_addresses_in_candidates_and_c_lines_only():
    out = IceSettings(announce={"10.0.0.5": "203.0.113.7"}).rewrite_sdp(ANSWER)
    before, after = ANSWER.split("\r\n"), out.split("\r\n")
    assert len(before) == len(after) and out.endswith("\r\n")
    changed = {b: a for b, a in zip(before, after, strict=True) if a != b}
    assert changed == {
        "c=IN IP4 10.0.0.5": "c=IN IP4 203.0.113.7",
        "a=candidate:1 1 udp 2130706431 10.0.0.5 40001 typ host": (
            "a=candidate:1 1 udp 2130706431 203.0.113.7 40001 typ host"
        ),
        "a=candidate:4 1 udp 2130706431 10.0.0.5 40004 typ host": (
            "a=candidate:4 1 udp 2130706431 203.0.113.7 40004 typ host"
        ),
    }
    # Untouched: the o= line, a=rtcp, the candidate on another address, and the srflx
    # candidate whose *related* address (raddr) is the announced one.
    for line in (
        "o=- 3900000000 3900000000 IN IP4 10.0.0.5",
        "a=rtcp:9 IN IP4 10.0.0.5",
        "c=IN IP4 10.0.0.6",
        "a=candidate:2 1 udp 2130706431 10.0.0.6 40002 typ host",
        "a=candidate:3 1 udp 1694498815 198.51.100.1 40003 typ srflx raddr 10.0.0.5 rport 40001",
    ):
        assert line in after


def test_rewrite_sdp_maps_several_addresses_and_ipv6():
    sdp = (
        "c=IN IP6 fd00::5\r\n"
        "a=candidate:1 1 udp 1 fd00::5 5000 typ host\r\n"
        "a=candidate:2 1 udp 1 10.0.0.6 5002 typ host"
    )
    out = IceSettings(announce={"fd00::5": "2001:db8::7", "10.0.0.6": "203.0.113.8"}).rewrite_sdp(sdp)
    assert out == (
        "c=IN IP6 2001:db8::7\r\n"
        "a=candidate:1 1 udp 1 2001:db8::7 5000 typ host\r\n"
        "a=candidate:2 1 udp 1 203.0.113.8 5002 typ host"
    )


# ------------------------------------------------ host addresses and ports


async def test_default_gathering_is_loopback_here(ice_policy):
    # In the test network namespace loopback is the only interface: aioice would offer no
    # candidate at all (it skips loopback), so the default falls back to 127.0.0.1.
    if _aioice_host_addresses(True, True):
        pytest.skip("this machine has non-loopback interfaces (no private network namespace)")
    ice_policy(IceSettings())
    candidates = await _gathered_candidates(IceSettings())
    assert candidates and {(a, t) for a, _, t in candidates} == {("127.0.0.1", "host")}


@pytest.mark.parametrize("hosts", [("127.0.0.2",), ("127.0.0.1", "127.0.0.3")])
async def test_candidates_are_exactly_on_the_configured_host_addresses(ice_policy, hosts):
    ice = IceSettings(host_addresses=hosts)
    ice_policy(ice)
    candidates = await _gathered_candidates(ice)
    assert sorted({a for a, _, _ in candidates}) == sorted(hosts)
    assert {t for _, _, t in candidates} == {"host"}, "no STUN server: host candidates only"


async def test_host_candidates_bind_within_the_udp_port_range(ice_policy):
    low, high = 41000, 41050
    ice = IceSettings(host_addresses=("127.0.0.1", "127.0.0.2"), udp_ports=(low, high))
    ice_policy(ice)
    ports = []
    for _ in range(3):  # several peer connections, several transceivers (not bundled in the offer)
        candidates = await _gathered_candidates(ice, transceivers=2)
        assert candidates
        ports += [p for _, p, _ in candidates]
    assert all(low <= p <= high for p in ports), ports
    assert len(set(ports)) > 1
    # Back to the loopback-only policy: ports are the kernel's choice again.
    ice_policy(ICE)
    ports = [p for _, p, _ in await _gathered_candidates(ICE, transceivers=2)]
    assert not all(low <= p <= high for p in ports), ports


async def test_a_full_udp_port_range_gives_no_candidate_rather_than_one_outside_it(ice_policy):
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        if port < 1024:
            pytest.skip("ephemeral port below 1024")
        ice = IceSettings(host_addresses=("127.0.0.1",), udp_ports=(port, port))
        ice_policy(ice)
        # The only port is taken: aioice gets no host candidate rather than one outside the range.
        assert await _gathered_candidates(ice) == []
    finally:
        holder.close()


# ----------------------------------------------------------- RelaySettings


@pytest.mark.parametrize("name", ["a b", "x" * 65, "", "a/b", "é", "a.b"])
def test_relay_settings_reject_bad_stream_names(name):
    with pytest.raises(ValueError, match="stream name"):
        RelaySettings(streams={name: StreamAccess(key="k")})


@pytest.mark.parametrize("name", ["a", "x" * 64, "Studio_1-b"])
def test_relay_settings_accept_good_stream_names(name):
    assert name in RelaySettings(streams={name: StreamAccess(key="k")}).streams


def test_max_body_bytes_has_a_floor():
    with pytest.raises(ValueError, match="max_body_bytes"):
        RelaySettings(max_body_bytes=100)


def test_dev_mode_only_without_any_stream_key():
    assert RelaySettings().dev_mode
    assert RelaySettings(streams={"a": StreamAccess(viewer_token="v")}, viewer_token="g").dev_mode
    assert not RelaySettings(streams={"a": StreamAccess(), "b": StreamAccess(key="kb")}).dev_mode


PUBLISH = RelaySettings(
    streams={"a": StreamAccess(key="key-a"), "b": StreamAccess(key="key-b"), "open": StreamAccess()}
)


@pytest.mark.parametrize(
    "stream, token, allowed",
    [
        ("a", "key-a", True),
        ("b", "key-b", True),
        ("a", "key-b", False),  # another stream's key
        ("a", None, False),
        ("a", "", False),
        ("a", "key-a ", False),
        ("a", "KEY-A", False),
        ("open", "key-a", False),  # configured without a key: nobody publishes it
        ("open", None, False),
        ("unknown", "key-a", False),  # not configured
        ("unknown", None, False),
        ("unknown", "\x00" * 32, False),  # the internal placeholder secret is no key
        ("open", "\x00" * 32, False),
    ],
)
def test_may_publish(stream, token, allowed):
    assert PUBLISH.may_publish(stream, token) is allowed


def test_dev_mode_may_publish_anything():
    dev = RelaySettings(streams={"a": StreamAccess(viewer_token="v")})
    assert dev.may_publish("a", None) and dev.may_publish("anything", "whatever")


WATCH = RelaySettings(
    streams={"own": StreamAccess(key="k1", viewer_token="own-token"), "plain": StreamAccess(key="k2")},
    viewer_token="global-token",
)
OPEN = RelaySettings(streams={"own": StreamAccess(key="k1", viewer_token="own-token"), "plain": StreamAccess(key="k2")})


@pytest.mark.parametrize(
    "settings, stream, token, allowed",
    [
        (WATCH, "own", "own-token", True),
        (WATCH, "own", "global-token", False),  # a stream's own token replaces the global one
        (WATCH, "own", None, False),
        (WATCH, "plain", "global-token", True),
        (WATCH, "plain", "own-token", False),
        (WATCH, "plain", None, False),
        (WATCH, "unknown", "global-token", True),
        (WATCH, "unknown", None, False),
        (OPEN, "own", "own-token", True),
        (OPEN, "own", None, False),
        (OPEN, "own", "k1", False),  # the stream key is not a viewer token
        (OPEN, "plain", None, True),
        (OPEN, "plain", "anything", True),
        (OPEN, "unknown", None, True),
    ],
)
def test_may_watch(settings, stream, token, allowed):
    assert settings.may_watch(stream, token) is allowed


def test_secrets_are_not_in_repr():
    settings = RelaySettings(
        streams={"a": StreamAccess(key="sekrit-key-a", viewer_token="sekrit-view-a")}, viewer_token="sekrit-global"
    )
    assert "sekrit" not in repr(settings) and "sekrit" not in str(settings)
    assert "sekrit" not in repr(settings.streams["a"])


def test_turn_credentials_are_not_in_repr():
    ice = IceSettings(servers=(IceServer(("turn:127.0.0.1:3478",), username="user", credential="sekrit-turn"),))
    assert "sekrit" not in repr(RelaySettings(ice=ice))


# ---------------------------------------------------------------- config

FULL = """
[server]
host = "0.0.0.0"
port = 9000
cors_origin = "https://example.com"
max_body_bytes = 32768
viewer_token = "global-view"

[server.ice]
servers = ["stun:127.0.0.1:3478", { urls = ["turn:127.0.0.1:3478"], username = "u", credential = "c" }]
host_addresses = ["10.0.0.5"]
announce = { "10.0.0.5" = "203.0.113.7" }
udp_ports = [40000, 40999]

[server.stream]
stall_seconds = 0.25
ended_grace_seconds = 2.0

[streams.studio]
key_env = "STUDIO_KEY"
viewer_token = "studio-view"

[streams.lobby]
key = "lobby-key"
viewer_token_env = "LOBBY_VIEW"
"""


def test_config_server_ice_stream_and_streams(tmp_path):
    relay = config_from(tmp_path, FULL, env={"STUDIO_KEY": "from-env", "LOBBY_VIEW": "lobby-view-env"}).relay
    assert (relay.host, relay.port, relay.cors_origin, relay.max_body_bytes) == (
        "0.0.0.0",
        9000,
        "https://example.com",
        32768,
    )
    assert relay.viewer_token == "global-view"
    assert relay.ice == IceSettings(
        servers=(IceServer(("stun:127.0.0.1:3478",)), IceServer(("turn:127.0.0.1:3478",), "u", "c")),
        host_addresses=("10.0.0.5",),
        announce={"10.0.0.5": "203.0.113.7"},
        udp_ports=(40000, 40999),
    )
    assert relay.stream.stall_seconds == 0.25 and relay.stream.ended_grace_seconds == 2.0
    assert relay.streams == {
        "studio": StreamAccess(key="from-env", viewer_token="studio-view"),
        "lobby": StreamAccess(key="lobby-key", viewer_token="lobby-view-env"),
    }
    assert (
        not relay.dev_mode and relay.may_publish("studio", "from-env") and not relay.may_publish("studio", "STUDIO_KEY")
    )


def test_config_defaults(tmp_path):
    relay = config_from(tmp_path, "").relay
    assert relay == RelaySettings() and relay.dev_mode and relay.ice.rtc_configuration().iceServers == []


def test_config_key_env_reads_the_passed_env_not_os_environ(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVESAFE_TEST_KEY", "from-os")
    text = '[streams.s]\nkey_env = "LIVESAFE_TEST_KEY"\n'
    assert config_from(tmp_path, text, env={"LIVESAFE_TEST_KEY": "from-dict"}).relay.streams["s"].key == "from-dict"
    message = config_error(tmp_path, text, env={})
    assert "streams.s.key_env" in message and "LIVESAFE_TEST_KEY" in message


@pytest.mark.parametrize(
    "text, env, expected",
    [
        # unknown keys, with where they are
        ("[server]\nbogus = 1\n", {}, r"server: unknown key\(s\) \['bogus'\]"),
        ("[server.ice]\nstun = 'stun:x'\n", {}, r"server\.ice: unknown key\(s\) \['stun'\]"),
        ("[server.stream]\nnope = 1\n", {}, r"server\.stream: unknown key\(s\) \['nope'\]"),
        ("[streams.s]\nkey = 'k'\npassword = 'p'\n", {}, r"streams\.s: unknown key\(s\) \['password'\]"),
        ("[serve]\nport = 1\n", {}, r"unknown key\(s\) \['serve'\]"),
        (
            "[server.ice]\nservers = [{ urls = 'turn:h', username = 'u', credential = 'c', user = 'x' }]\n",
            {},
            r"server\.ice\.servers\[0\]: unknown key\(s\) \['user'\]",
        ),
        # secrets
        ("[streams.s]\nkey = 'k'\nkey_env = 'K'\n", {"K": "v"}, r"streams\.s: give key or key_env, not both"),
        (
            "[streams.s]\nviewer_token = 'v'\nviewer_token_env = 'V'\n",
            {"V": "v"},
            r"streams\.s: give viewer_token or viewer_token_env, not both",
        ),
        (
            "[streams.s]\nkey_env = 'MISSING_KEY'\n",
            {},
            r"streams\.s\.key_env: environment variable 'MISSING_KEY' is not set",
        ),
        (
            "[streams.s]\nkey = 'k'\nviewer_token_env = 'NOPE'\n",
            {},
            r"streams\.s\.viewer_token_env: environment variable 'NOPE' is not set",
        ),
        (
            "[server]\nviewer_token_env = 'NOPE'\n",
            {},
            r"server\.viewer_token_env: environment variable 'NOPE' is not set",
        ),
        ("[streams.s]\nkey = ''\n", {}, r"streams\.s\.key: expected a non-empty string"),
        ("[streams.s]\nkey = '   '\n", {}, r"streams\.s\.key: expected a non-empty string"),
        ("[streams.s]\nkey_env = 'EMPTY'\n", {"EMPTY": ""}, r"streams\.s\.key: expected a non-empty string"),
        ("[streams.s]\nkey = 5\n", {}, r"streams\.s\.key: expected a non-empty string"),
        ("[server]\nviewer_token = ''\n", {}, r"server\.viewer_token: expected a non-empty string"),
        ("[streams]\ns = 'key'\n", {}, r"streams\.s: expected a table"),
        ("[streams.'a b']\nkey = 'k'\n", {}, r"streams: stream name 'a b'"),
        # udp_ports
        ("[server.ice]\nudp_ports = [40000]\n", {}, r"server\.ice\.udp_ports: expected \[low, high\], got \[40000\]"),
        ("[server.ice]\nudp_ports = '40000-40999'\n", {}, r"server\.ice\.udp_ports: expected \[low, high\]"),
        ("[server.ice]\nudp_ports = [40000.0, 40999.0]\n", {}, r"server\.ice\.udp_ports: expected \[low, high\]"),
        (
            "[server.ice]\nudp_ports = [80, 90]\n",
            {},
            r"server\.ice: udp_ports \[80, 90\]: expected \[low, high\] within 1024\.\.65535",
        ),
        ("[server.ice]\nudp_ports = [41000, 40000]\n", {}, r"server\.ice: udp_ports \[41000, 40000\]"),
        # addresses
        (
            "[server.ice]\nannounce = { '10.0.0.5' = 'my.public.host' }\n",
            {},
            r"server\.ice\.announce: 'my\.public\.host' is not an IP address",
        ),
        (
            "[server.ice]\nannounce = { 'eth0' = '203.0.113.7' }\n",
            {},
            r"server\.ice\.announce: 'eth0' is not an IP address",
        ),
        ("[server.ice]\nannounce = { '10.0.0.5' = 7 }\n", {}, r"server\.ice\.announce: expected a table"),
        ("[server.ice]\nannounce = ['10.0.0.5']\n", {}, r"server\.ice\.announce: expected a table"),
        (
            "[server.ice]\nhost_addresses = ['localhost']\n",
            {},
            r"server\.ice\.host_addresses: 'localhost' is not an IP address",
        ),
        (
            "[server.ice]\nhost_addresses = '10.0.0.5'\n",
            {},
            r"server\.ice\.host_addresses: expected a list of IP addresses",
        ),
        # ICE servers
        (
            "[server.ice]\nservers = ['http://stun.example.com']\n",
            {},
            r"server\.ice\.servers\[0\]: ICE server URL 'http://stun\.example\.com' must start with stun:",
        ),
        (
            "[server.ice]\nservers = ['stun:ok:3478', { urls = ['stun.example.com'] }]\n",
            {},
            r"server\.ice\.servers\[1\]: ICE server URL 'stun\.example\.com'",
        ),
        (
            "[server.ice]\nservers = ['turn:turn.example.com:3478']\n",
            {},
            r"server\.ice\.servers\[0\]: TURN server 'turn:turn\.example\.com:3478' needs a username and a credential",
        ),
        (
            "[server.ice]\nservers = [{ urls = 'turns:t.example.com', username = 'u' }]\n",
            {},
            r"server\.ice\.servers\[0\]: TURN server 'turns:t\.example\.com' needs a username and a credential",
        ),
        ("[server.ice]\nservers = [{ username = 'u' }]\n", {}, r"server\.ice\.servers\[0\]: expected a URL or a table"),
        # types of plain settings
        ("[server]\nport = '8080'\n", {}, r"server\.port: expected int, got '8080'"),
        ("[server]\nmax_body_bytes = 10\n", {}, r"server: max_body_bytes must be at least 1024"),
        ("[server]\nworkers = 0\n", {}, r"server: workers must be at least 1"),
        ("[server]\nworkers = 'auto'\n", {}, r"server\.workers: expected int, got 'auto'"),
        ("[server.stream]\nstall_seconds = 0\n", {}, r"server\.stream: stall_seconds must be > 0"),
        ("[server]\nice = 1\n", {}, r"server\.ice: expected a table"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, env, expected):
    message = config_error(tmp_path, text, env)
    assert re.search(expected, message), message


def test_config_errors_do_not_echo_secrets(tmp_path):
    message = config_error(tmp_path, "[streams.s]\nkey = 'sekrit-key'\nkey_env = 'K'\n", {"K": "sekrit-env"})
    assert "sekrit" not in message
    message = config_error(tmp_path, "[streams.s]\nkey = 'sekrit-key'\nbogus = 1\n")
    assert "sekrit" not in message


def test_misplaced_streams_table_under_server_is_an_error_not_dev_mode(tmp_path):
    message = config_error(tmp_path, "[server.streams.studio]\nkey = 'studio-key'\n")
    assert "server" in message and "streams" in message
