"""Typed settings from a TOML file (and the command line), validated at start.

Example::

    [guard]
    sample_every = 5        # hash every 5th frame, plus every cut
    delay_frames = 10       # output delay; must be >= sample_every
    hold_seconds = 3.0      # keep redacting this long after the last match

    [guard.search]
    boxes = 12              # outlined boxes (windows, panes) hashed per deep sample

    [lists]
    skip_bad_lines = false  # true: load a list minus its bad lines (counted, reported)
    reload_seconds = 2.0

    [[lists.file]]
    path = "sample_streams/blocklist.txt"   # relative to this file
    name = "samples"
    category = "test"
    action = "slate"
    thresholds = { pdq = 31 }

    [server]                # livesafe serve
    host = "127.0.0.1"
    port = 8080
    workers = 1             # processes behind this port (serve --workers; each its own port after it)
    admin_port = 9090       # optional: /metrics, /dashboard, the moderation/lists/banks APIs and the
                            # stream listing are served only on this port (404 on port); default: none,
                            # everything on port.  Not with [cluster] (actions are forwarded on port).
    admin_host = "10.0.0.5" # optional: the admin listener's address (default: host)

    [server.ice]
    servers = []                      # no STUN/TURN unless you list one
    host_addresses = ["10.0.0.5"]     # candidates to gather (default: every interface)
    announce = { "10.0.0.5" = "203.0.113.7" }   # 1:1 NAT: advertise the public address
    udp_ports = [40000, 40999]

    [server.stream]
    stall_seconds = 0.5     # guard over budget on one frame -> viewers get the slate

    [streams.studio]
    key_env = "STUDIO_KEY"  # the stream key, from the environment (or key = "...")
    viewer_token = "..."    # optional: viewers must present it
    profile = "child"       # policy profile (default: "default")

    [profiles.child]        # override a built-in profile's fields, or define a new one
    reports_to_redact = 1

    [auth.jwt]              # signed tokens (optional): new streams need no config edit
    secret_env = "LIVESAFE_JWT_SECRET"  # HS256 secret (>= 32 bytes), from the environment
    public_key = "jwt-ed25519.pem"      # and/or EdDSA: an Ed25519 public key, a PEM file (relative
                                        # to this file) or the PEM text itself
    issuer = "https://platform.example"  # optional: iss must match
    audience = "livesafe"   # optional: aud must contain it
    leeway_seconds = 30     # clock skew allowed on exp/nbf

    [auth.hook]             # the platform's HTTP auth hook (optional)
    url = "http://10.0.0.3/livesafe-auth"  # POSTed {stream, role, token, remote}; answers {"allow", "profile"?}
    timeout_seconds = 2.0   # no answer by then: refused (it fails closed, on errors and non-2xx too)
    cache_seconds = 10.0    # answers kept this long per (stream, role, token, address)

    # Who may publish/view, in order: the stream's static key (publish) or viewer token (its own, else
    # [server] viewer_token) decides alone; else a JWT, if [auth.jwt]; else the hook, if [auth.hook].
    # Without any of them publishing is open (dev mode) and viewing is open.  A token's "profile"
    # claim or the hook's "profile" applies to streams not listed in [streams].

    [moderation]
    database = "livesafe.db"  # SQLite (WAL), relative to this file
    retention_days = 30

    [moderation.tokens.alice]
    token_env = "ALICE_TOKEN"
    role = "moderator"      # or "observer" (read only)

    [cluster]               # several nodes sharing one Redis (optional; see docs/scaling.md)
    redis_url = "redis://10.0.0.2:6379/0"
    node_name = "node-a"    # unique in the cluster (default: the host name)
    advertise_url = "https://node-a.example.com"   # how publishers and other nodes reach this one
    # the shared secret nodes sign requests with: LIVESAFE_CLUSTER_SECRET (or secret_env = "VAR")

    [[webhooks]]
    url = "https://hooks.example.com/livesafe"
    secret_env = "HOOK_SECRET"   # Standard Webhooks secret (whsec_... or any string)
    categories = ["csam"]        # optional filters: categories, types, min_severity

A mistake in the file is reported as ``FILE: key: reason`` and stops start-up:
running with a misread list or setting would be running unguarded.  On SIGHUP
the file is read and checked again the same way (``livesafe.reload``): a
mistake then changes nothing, and what is fixed at start stays as it started.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from livesafe.cluster.settings import ClusterSettings
from livesafe.guard.search import SearchSettings
from livesafe.guard.stream_guard import GuardSettings
from livesafe.lists import ListSpec
from livesafe.moderation.settings import ModerationSettings, Principal, WebhookEndpoint
from livesafe.policy import BUILTIN_PROFILES, PolicyProfile
from livesafe.relay.hook import HookSettings
from livesafe.relay.ice import IceServer, IceSettings
from livesafe.relay.overload import OverloadSettings
from livesafe.relay.settings import RelaySettings, StreamAccess
from livesafe.relay.stream import StreamSettings
from livesafe.relay.tokens import JwtSettings, TokenVerifier


class ConfigError(ValueError):
    pass


def _with_env(*secrets: str) -> frozenset[str]:
    """A secret is given as ``NAME`` or, kept out of the file, ``NAME_env`` (see ``_secret``)."""
    return frozenset(key for name in secrets for key in (name, f"{name}_env"))


# The keys of each table the loader reads key by key (a table that is one settings dataclass takes
# that class's fields instead: _build).  Each table is checked against its set before anything in it
# is read, so every key the code reads is listed here -- and config_keys(), what docs/configuration.md
# must document (tests/test_docs.py), is complete.  NAME: one table per stream, token...; []: an array.
_KEYS: dict[str, frozenset[str]] = {
    "": frozenset({"guard", "lists", "server", "streams", "profiles", "moderation", "webhooks", "cluster", "auth"}),
    "lists": frozenset({"skip_bad_lines", "reload_seconds", "file", "source"}),
    "server.ice": frozenset({"servers", "host_addresses", "announce", "udp_ports"}),
    "server.ice.servers[]": _with_env("credential") | {"urls", "username"},
    "streams.NAME": _with_env("key", "viewer_token") | {"profile"},
    "auth": frozenset({"jwt", "hook"}),
    "auth.jwt": _with_env("secret") | {"public_key", "issuer", "audience", "leeway_seconds"},
    "moderation.tokens.NAME": _with_env("token") | {"role"},
    "webhooks[]": _with_env("secret") | {"url", "name", "categories", "types", "min_severity"},
}
# RelaySettings fields that come from tables of their own, never from plain keys of [server]: a stream
# key misplaced under [server] would otherwise vanish and leave the relay in dev mode.
_SERVER_ELSEWHERE = {
    "streams": "[streams.NAME]",
    "profiles": "[profiles.NAME]",
    "jwt": "[auth.jwt]",
    "hook": "[auth.hook]",
    "ice": "[server.ice]",
    "stream": "[server.stream]",
    "overload": "[server.overload]",
}


@dataclass(frozen=True)
class Config:
    guard: GuardSettings = field(default_factory=GuardSettings)
    lists: tuple[ListSpec, ...] = ()
    skip_bad_lines: bool = False
    reload_seconds: float = 2.0
    relay: RelaySettings = field(default_factory=RelaySettings)
    moderation: ModerationSettings = field(default_factory=ModerationSettings)
    cluster: ClusterSettings | None = None  # None: one node on its own

    def with_lists(self, extra: list[ListSpec]) -> Config:
        return replace(self, lists=self.lists + tuple(extra))


NO_DEFAULT = object()  # config_keys(): a key whose default is not one value (required, a secret, derived)


def config_keys() -> dict[str, dict[str, Any]]:
    """Every table the file may hold and, for each, every key the loader accepts with its default.

    Tables are named as in the file (``server.ice``); ``NAME`` stands for the table's own name
    (``streams.NAME``), ``[]`` for an entry of an array of tables (``webhooks[]``), and
    ``lists.source[kind=url]`` for the options only that kind of list reads.  Tables of tables
    appear under their own names, not as keys of their parent.  What docs/configuration.md
    documents, key by key (tests/test_docs.py); the sets are the ones the loader checks.
    """
    from livesafe.lists.sources import SOURCE_KINDS  # the kinds' options: the sources check them when built

    def of(cls: type, instance: Any = None, leave_out: set[str] = set()) -> dict[str, Any]:  # noqa: B006
        instance = cls() if instance is None else instance
        return {f.name: getattr(instance, f.name) for f in fields(cls) if f.name not in leave_out}

    def listed(path: str, leave_out: set[str] = set()) -> dict[str, Any]:  # noqa: B006
        return dict.fromkeys(sorted(_KEYS[path] - leave_out), NO_DEFAULT)

    spec = of(ListSpec, ListSpec(name="x"), {"path", "name", "category", "url", "kind", "thresholds", "options"})
    entry = {key: spec.get(key, NO_DEFAULT) for key in ("kind", "path", "thresholds", *_COMMON_LIST_KEYS)}
    keys: dict[str, dict[str, Any]] = {
        "guard": of(GuardSettings, leave_out={"search"}),
        "guard.search": of(SearchSettings),
        "lists": {"skip_bad_lines": Config.skip_bad_lines, "reload_seconds": Config.reload_seconds},
        "lists.file[]": entry | {"kind": "file"},
        "lists.source[]": entry,
        **{
            f"lists.source[kind={kind}]": dict.fromkeys(sorted(cls.OPTIONS), NO_DEFAULT)
            for kind, cls in sorted(SOURCE_KINDS.items())
            if cls.OPTIONS
        },
        "server": of(RelaySettings, leave_out=set(_SERVER_ELSEWHERE) | {"viewer_token"})
        | dict.fromkeys(sorted(_with_env("viewer_token")), NO_DEFAULT),
        "server.ice": listed("server.ice"),
        "server.ice.servers[]": listed("server.ice.servers[]"),
        "server.stream": of(StreamSettings),
        "server.overload": of(OverloadSettings),
        "streams.NAME": listed("streams.NAME") | {"profile": StreamAccess.profile},
        "profiles.NAME": of(PolicyProfile, BUILTIN_PROFILES["default"], {"name"}),  # new names start from it
        "auth.jwt": listed("auth.jwt") | {"leeway_seconds": JwtSettings.leeway_seconds},
        "auth.hook": of(HookSettings, HookSettings("http://127.0.0.1/")) | {"url": NO_DEFAULT},
        "moderation": of(ModerationSettings, leave_out={"tokens", "webhooks"}),
        "moderation.tokens.NAME": listed("moderation.tokens.NAME"),
        "webhooks[]": listed("webhooks[]") | {"min_severity": WebhookEndpoint.min_severity},
        "cluster": of(ClusterSettings, _CLUSTER_TEMPLATE, {"secret"})
        | {"redis_url": NO_DEFAULT, "node_name": NO_DEFAULT, "secret_env": ClusterSettings.SECRET_ENV},
    }
    return keys


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> Config:
    """``env`` (default ``os.environ``) supplies secrets named by ``*_env`` keys."""
    if path is None:
        return Config()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return _parse(data, Path(path).resolve().parent, os.environ if env is None else env)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _parse(data: dict[str, Any], base: Path, env: Mapping[str, str]) -> Config:
    _only(data, _KEYS[""], "")
    guard_data = dict(_table(data, "guard", ""))
    if "regions" in guard_data:
        raise ConfigError("guard.regions: replaced by [guard.search] (see docs/configuration.md)")
    search_data = _table(guard_data, "search", "guard")
    guard_data.pop("search", None)
    search = _build(SearchSettings, search_data, "guard.search")
    guard = _build(GuardSettings, {**guard_data, "search": search}, "guard")
    lists_data = dict(_table(data, "lists", ""))
    _only(lists_data, _KEYS["lists"], "lists")
    files = lists_data.pop("file", [])
    if not isinstance(files, list):
        raise ConfigError("lists.file: expected an array of tables ([[lists.file]])")
    skip = lists_data.get("skip_bad_lines", Config.skip_bad_lines)
    if not isinstance(skip, bool):
        raise ConfigError(f"lists.skip_bad_lines: expected true or false, got {skip!r}")
    reload_seconds = lists_data.get("reload_seconds", Config.reload_seconds)
    if not _is_number(reload_seconds) or reload_seconds <= 0:
        raise ConfigError(f"lists.reload_seconds: expected a positive number, got {reload_seconds!r}")
    sources = lists_data.pop("source", [])
    if not isinstance(sources, list):
        raise ConfigError("lists.source: expected an array of tables ([[lists.source]])")
    specs = [_list_spec({"kind": "file", **entry} if isinstance(entry, dict) else entry, f"lists.file[{i}]", base)
             for i, entry in enumerate(files)]  # fmt: skip
    specs += [_list_spec(entry, f"lists.source[{i}]", base) for i, entry in enumerate(sources)]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError("lists: list names must be unique (across [[lists.file]] and [[lists.source]])")
    try:
        relay = replace(_relay(data, env), **_auth(data, base, env))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    moderation = _moderation(data, base, env)
    return Config(
        guard=guard,
        lists=tuple(specs),
        skip_bad_lines=skip,
        reload_seconds=float(reload_seconds),
        relay=relay,
        moderation=moderation,
        cluster=_cluster(data, env) if "cluster" in data else None,
    )


# What [cluster] keys are type-checked against (redis_url and the secret have no default).
_CLUSTER_TEMPLATE = ClusterSettings("redis://127.0.0.1:6379/0", "x" * 16)


def _cluster(data: dict[str, Any], env: Mapping[str, str]) -> ClusterSettings:
    """``[cluster]``: ``redis_url`` required; the secret from the environment, never the file."""
    section = dict(_table(data, "cluster", ""))
    if "secret" in section:
        raise ConfigError(f"cluster.secret: keep it out of the file: set {ClusterSettings.SECRET_ENV} or secret_env")
    var = section.pop("secret_env", ClusterSettings.SECRET_ENV)
    if not isinstance(var, str) or not env.get(var):
        raise ConfigError(f"cluster: needs the nodes' shared secret in the environment variable {var!r}")
    if not isinstance(section.get("redis_url"), str):
        raise ConfigError('cluster.redis_url: required, e.g. "redis://127.0.0.1:6379/0"')
    return _build(ClusterSettings, section | {"secret": env[var]}, "cluster", _CLUSTER_TEMPLATE)


def _moderation(data: dict[str, Any], base: Path, env: Mapping[str, str]) -> ModerationSettings:
    section = dict(_table(data, "moderation", ""))
    tokens = []
    for name, entry in _table(section, "tokens", "moderation").items():
        where = f"moderation.tokens.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a table with token/token_env and role")
        _only(entry, _KEYS["moderation.tokens.NAME"], where)
        entry = dict(entry)
        token = _secret(entry, "token", where, env)
        role = entry.pop("role", None)
        if token is None or role is None:
            raise ConfigError(f"{where}: token (or token_env) and role are required")
        try:
            tokens.append(Principal(name, role, token))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    section.pop("tokens", None)
    hooks = data.get("webhooks", [])
    if not isinstance(hooks, list):
        raise ConfigError("webhooks: expected an array of tables ([[webhooks]])")
    webhooks = [_webhook(entry, f"webhooks[{i}]", env) for i, entry in enumerate(hooks)]
    # Tokens are [moderation.tokens.NAME] tables and webhooks a top-level [[webhooks]] array, never plain keys.
    _only(section, {f.name for f in fields(ModerationSettings)} - {"tokens", "webhooks"}, "moderation")
    settings = _build(ModerationSettings, section, "moderation")
    # A path the file names is relative to the file, as list paths are; the default stays where the
    # README says (the current directory), whether or not there is a config file.
    named = "database" in section and settings.database != ":memory:"
    database = str(base / settings.database) if named else settings.database
    try:
        return replace(settings, database=database, tokens=tuple(tokens), webhooks=tuple(webhooks))
    except ValueError as exc:
        raise ConfigError(f"moderation: {exc}") from None


def _webhook(entry: Any, where: str, env: Mapping[str, str]) -> WebhookEndpoint:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table with url and secret/secret_env")
    _only(entry, _KEYS["webhooks[]"], where)
    entry = dict(entry)
    secret = _secret(entry, "secret", where, env)
    for key in ("categories", "types"):
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}.{key}: expected a list of strings, got {value!r}")
        entry[key] = tuple(value)
    if not isinstance(entry.get("url"), str) or secret is None:
        raise ConfigError(f"{where}: url and secret (or secret_env) are required")
    try:
        return WebhookEndpoint(secret=secret, **entry)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _profiles(data: dict[str, Any]) -> dict[str, PolicyProfile]:
    """Built-in profiles, with any [profiles.NAME] fields laid over them (new names start from default)."""
    profiles = dict(BUILTIN_PROFILES)
    for name, entry in _table(data, "profiles", "").items():
        where = f"profiles.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a table of profile settings")
        if "name" in entry:
            raise ConfigError(f"{where}: the table's name is the profile's name (no name key)")
        built = _build(PolicyProfile, entry, where)
        base = profiles.get(name, BUILTIN_PROFILES["default"])
        profiles[name] = replace(base, name=name, **{k: getattr(built, k) for k in entry})
    return profiles


def _relay(data: dict[str, Any], env: Mapping[str, str]) -> RelaySettings:
    server = dict(_table(data, "server", ""))
    ice = _ice(_table(server, "ice", "server"), env)
    stream = _build(StreamSettings, _table(server, "stream", "server"), "server.stream")
    overload = _build(OverloadSettings, _table(server, "overload", "server"), "server.overload")
    for table in ("ice", "stream", "overload"):
        server.pop(table, None)
    viewer_token = _secret(server, "viewer_token", "server", env)
    streams = {}
    for name, entry in _table(data, "streams", "").items():
        where = f"streams.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a table with key/key_env and viewer_token/viewer_token_env")
        _only(entry, _KEYS["streams.NAME"], where)
        entry = dict(entry)
        access = StreamAccess(
            key=_secret(entry, "key", where, env), viewer_token=_secret(entry, "viewer_token", where, env)
        )
        profile = entry.pop("profile", "default")
        if not isinstance(profile, str):
            raise ConfigError(f"{where}.profile: expected a profile name, got {profile!r}")
        access = replace(access, profile=profile)
        streams[name] = access
    misplaced = sorted(set(_SERVER_ELSEWHERE) & set(server))
    if misplaced:
        tables = ", ".join(_SERVER_ELSEWHERE[key] for key in misplaced)
        raise ConfigError(
            f"server: {misplaced} do not belong here (they go in {tables}; stream keys in [streams.NAME])"
        )
    admin = {key: server.pop(key) for key in ("admin_port", "admin_host") if key in server}  # no default to check
    if "admin_port" in admin and (not isinstance(admin["admin_port"], int) or isinstance(admin["admin_port"], bool)):
        raise ConfigError(f"server.admin_port: expected a port number, got {admin['admin_port']!r}")
    if "admin_host" in admin and not isinstance(admin["admin_host"], str):
        raise ConfigError(f"server.admin_host: expected an address, got {admin['admin_host']!r}")
    settings = _build(RelaySettings, server, "server")
    try:
        settings = replace(settings, **admin)
    except ValueError as exc:
        raise ConfigError(f"server: {exc}") from None
    try:
        return replace(
            settings,
            streams=streams,
            viewer_token=viewer_token,
            ice=ice,
            stream=stream,
            overload=overload,
            profiles=_profiles(data),
        )
    except ValueError as exc:
        raise ConfigError(f"streams: {exc}") from None


def _auth(data: dict[str, Any], base: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """``[auth.jwt]`` and ``[auth.hook]`` as RelaySettings fields (absent tables: None)."""
    auth = _table(data, "auth", "")
    _only(auth, _KEYS["auth"], "auth")
    found: dict[str, Any] = {}
    if "jwt" in auth:
        entry = dict(_table(auth, "jwt", "auth"))
        _only(entry, _KEYS["auth.jwt"], "auth.jwt")
        secret = _secret(entry, "secret", "auth.jwt", env)
        public_key = entry.pop("public_key", None)
        if public_key is not None:
            if not isinstance(public_key, str):
                raise ConfigError("auth.jwt.public_key: expected a PEM file's path or the PEM text")
            if not public_key.lstrip().startswith("-----BEGIN"):
                try:
                    public_key = (base / public_key).read_text(encoding="ascii")
                except (OSError, UnicodeDecodeError) as exc:
                    raise ConfigError(f"auth.jwt.public_key: cannot read {public_key!r} ({exc})") from None
        for key in ("issuer", "audience"):
            if key in entry and not isinstance(entry[key], str):
                raise ConfigError(f"auth.jwt.{key}: expected a string, got {entry[key]!r}")
        leeway = entry.get("leeway_seconds", JwtSettings.leeway_seconds)
        if not _is_number(leeway):
            raise ConfigError(f"auth.jwt.leeway_seconds: expected a number, got {leeway!r}")
        found["jwt"] = JwtSettings(secret=secret, public_key=public_key, **(entry | {"leeway_seconds": float(leeway)}))
        TokenVerifier(found["jwt"])  # a key that is not Ed25519 PEM is refused now, not at the first publish
    if "hook" in auth:
        hook = _table(auth, "hook", "auth")
        if not isinstance(hook.get("url"), str):
            raise ConfigError("auth.hook.url: required, the platform's http(s) URL")
        found["hook"] = _build(HookSettings, hook, "auth.hook", HookSettings("http://127.0.0.1/"))
    return found


def _secret(entry: dict[str, Any], key: str, where: str, env: Mapping[str, str]) -> str | None:
    """``key = "..."`` or ``key_env = "VAR"`` (popped from ``entry``); an empty secret is an error."""
    value, var = entry.pop(key, None), entry.pop(f"{key}_env", None)
    if value is not None and var is not None:
        raise ConfigError(f"{where}: give {key} or {key}_env, not both")
    if var is not None:
        if not isinstance(var, str) or var not in env:
            raise ConfigError(f"{where}.{key}_env: environment variable {var!r} is not set")
        value = env[var]
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(f"{where}.{key}: expected a non-empty string")
    return value


def _ice(data: dict[str, Any], env: Mapping[str, str]) -> IceSettings:
    _only(data, _KEYS["server.ice"], "server.ice")
    servers = []
    listed = data.get("servers", [])
    if not isinstance(listed, list):
        raise ConfigError(f"server.ice.servers: expected a list of URLs or tables, got {listed!r}")
    for i, entry in enumerate(listed):
        where = f"server.ice.servers[{i}]"
        if isinstance(entry, str):
            entry = {"urls": [entry]}
        if not isinstance(entry, dict) or "urls" not in entry:
            raise ConfigError(
                f"{where}: expected a URL or a table {{ urls = [...], username = ..., credential(_env) = ... }}"
            )
        _only(entry, _KEYS["server.ice.servers[]"], where)
        entry = dict(entry)
        credential = _secret(entry, "credential", where, env)  # a TURN password: credential_env keeps it out
        urls = entry["urls"] if isinstance(entry["urls"], list) else [entry["urls"]]
        try:
            servers.append(IceServer(tuple(str(u) for u in urls), entry.get("username"), credential))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    hosts = data.get("host_addresses", [])
    announce = data.get("announce", {})
    ports = data.get("udp_ports")
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise ConfigError(f"server.ice.host_addresses: expected a list of IP addresses, got {hosts!r}")
    if not isinstance(announce, dict) or not all(isinstance(v, str) for v in announce.values()):
        raise ConfigError(f"server.ice.announce: expected a table of local = public addresses, got {announce!r}")
    if ports is not None and not (
        isinstance(ports, list) and len(ports) == 2 and all(isinstance(p, int) for p in ports)
    ):
        raise ConfigError(f"server.ice.udp_ports: expected [low, high], got {ports!r}")
    for key, addresses in (("host_addresses", hosts), ("announce", [*announce, *announce.values()])):
        bad = [a for a in addresses if not _is_ip(a)]
        if bad:
            raise ConfigError(f"server.ice.{key}: {bad[0]!r} is not an IP address")
    try:
        return IceSettings(tuple(servers), tuple(hosts), dict(announce), tuple(ports) if ports else None)
    except ValueError as exc:
        raise ConfigError(f"server.ice: {exc}") from None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _list_spec(entry: Any, where: str, base: Path) -> ListSpec:
    """One ``[[lists.source]]`` (or ``[[lists.file]]``): the keys every kind has; the rest are the kind's options.

    The source itself checks its options (``make_source``), when the lists are
    built at start, so a typo is still an error before anything is served.
    """
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table with kind, name, category, action and path or url")
    entry = dict(entry)
    kind = entry.pop("kind", None)
    if not isinstance(kind, str):
        raise ConfigError(f'{where}.kind: required, e.g. "file", "url", "ncmec"')
    if kind == "file" and "path" not in entry:
        raise ConfigError(f"{where}: path is required")
    for key in ("path", "url", "name", "category", "action"):
        if key in entry and not isinstance(entry[key], str):
            raise ConfigError(f"{where}.{key}: expected a string, got {entry[key]!r}")
    if not entry.get("category"):  # webhooks, the dashboard and reports filter on it: no silent default
        raise ConfigError(f'{where}.category: required: what the list holds, e.g. "csam", "ncii", "terror", "test"')
    thresholds = entry.pop("thresholds", {})
    if not isinstance(thresholds, dict):
        raise ConfigError(f"{where}.thresholds: expected a table like {{ pdq = 31 }}, got {thresholds!r}")
    path = Path(entry.pop("path")) if "path" in entry else None
    common = {key: entry.pop(key) for key in _COMMON_LIST_KEYS if key in entry}
    try:
        return ListSpec(
            path=(path if path.is_absolute() else base / path) if path is not None else None,
            kind=kind,
            thresholds=thresholds,
            options=entry,
            **common,
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


# The keys every kind of list has (ListSpec's own fields); the rest of an entry is its source's options.
_COMMON_LIST_KEYS = (
    "name",
    "category",
    "action",
    "url",
    "poll_seconds",
    "max_stale_seconds",
    "flood_streams",
    "flood_window_seconds",
    "allow_empty",
)


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        name = f"{where}.{key}" if where else key
        raise ConfigError(f"{name}: expected a table ([{name}]), got {value!r}")
    return value


def _only(data: dict[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    unknown = set(data) - allowed
    if unknown:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}unknown key(s) {sorted(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _build(cls: type, data: dict[str, Any], where: str, defaults: Any = None) -> Any:
    """An instance of the settings dataclass ``cls``, each value type-checked against its default
    (``defaults``: an instance to take them from, for a class without defaults for everything)."""
    _only(data, {f.name for f in fields(cls)}, where)
    defaults = cls() if defaults is None else defaults
    values: dict[str, Any] = {}
    for key, value in data.items():
        default = getattr(defaults, key)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = _is_number(value)
        elif isinstance(default, tuple):
            numbers = bool(default) and isinstance(default[0], float)
            ok = isinstance(value, list) and all(_is_number(v) if numbers else isinstance(v, str) for v in value)
            if ok:
                value = tuple(float(v) for v in value) if numbers else tuple(value)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            expected = type(default).__name__
            if isinstance(default, tuple):
                expected = "a list of numbers" if numbers else "a list of strings"
            raise ConfigError(f"{where}.{key}: expected {expected}, got {value!r}")
        values[key] = value
    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
