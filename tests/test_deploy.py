"""The files in ``deploy/`` agree with the code: the image's command runs, the unit parses, the config loads.

Building the image needs the base image from a registry (no network here), so the
Dockerfile is checked statically: its command is the installed ``livesafe`` script's,
what it copies exists, its ports and volume are the example config's.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from livesafe.cli import main
from livesafe.config import ConfigError, load_config
from livesafe.events import Event
from livesafe.lists.sources import SourceContext, make_source
from livesafe.moderation.store.sqlite import SqliteStore

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
ROOT = DEPLOY.parent
CONFIG = DEPLOY / "livesafe.toml"


def _env_names(value: object) -> set[str]:
    """Every environment variable the config names (the values of its ``*_env`` keys)."""
    if isinstance(value, dict):
        found = {v for k, v in value.items() if k.endswith("_env") and isinstance(v, str)}
        return found.union(*(_env_names(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_env_names(v) for v in value))
    return set()


def _dummy_env() -> dict[str, str]:
    names = _env_names(tomllib.loads(CONFIG.read_text()))
    return {name: f"dummy-{name.lower()}-0123456789" for name in names}  # distinct: tokens must differ


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(word.upper(), rest.strip()) for word, _, rest in (line.partition(" ") for line in lines)]


def _one(keyword: str) -> str:
    found = [args for word, args in _instructions() if word == keyword]
    assert len(found) == 1, f"{keyword}: {found}"
    return found[0]


def test_the_image_runs_the_installed_livesafe_serve_with_the_config_path() -> None:
    command = json.loads(_one("ENTRYPOINT")) + json.loads(_one("CMD"))
    assert command == ["livesafe", "serve", "--config", "/etc/livesafe/livesafe.toml"]
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("livesafe") == "livesafe.cli:main"
    script = Path(sys.executable).with_name("livesafe")
    done = subprocess.run([str(script), *command[1:], "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--config" in done.stdout


def test_the_image_copies_what_exists_and_runs_as_its_own_user() -> None:
    for word, args in _instructions():
        if word == "COPY":
            *sources, _target = args.split()
            for source in sources:
                assert (ROOT / source).exists(), source
    user = _one("USER")
    assert user not in ("root", "0") and user
    assert _one("FROM").startswith("python:3.11-slim")


def test_the_image_exposes_the_example_configs_ports_and_keeps_the_database_in_its_volume() -> None:
    config = load_config(CONFIG, _dummy_env())
    exposed = {args for word, args in _instructions() if word == "EXPOSE"}
    low, high = config.relay.ice.udp_ports or (0, 0)
    assert exposed == {f"{config.relay.port}/tcp", f"{low}-{high}/udp"}
    (volume,) = json.loads(_one("VOLUME"))
    assert Path(config.moderation.database).parent == Path(volume)


def test_the_example_config_loads_with_every_secret_from_the_environment() -> None:
    env = _dummy_env()
    config = load_config(CONFIG, env)
    assert config.relay.streams["studio"].key == env["STUDIO_KEY"]
    assert config.relay.ice.servers[0].credential == env["LIVESAFE_TURN_PASSWORD"]
    assert {t.token for t in config.moderation.tokens} == {
        env["LIVESAFE_MODERATOR_TOKEN"],
        env["LIVESAFE_OBSERVER_TOKEN"],
    }
    assert config.relay.ice.announce and config.relay.admin_port is not None
    context = SourceContext(env=env)
    for spec in config.lists:  # each source checks its options and its secrets when it is made
        make_source(spec, context)
    # No secret written into the file itself: every secret-looking key is a *_env one.
    secret_keys = re.compile(r"^\s*(key|token|viewer_token|secret|password|credential)\s*=", re.M)
    assert not secret_keys.search(CONFIG.read_text())
    assert not re.search(r"\b(credential|password|secret|token)\s*=\s*\"", CONFIG.read_text())


@pytest.mark.parametrize("missing", sorted(_dummy_env()))
def test_the_example_config_refuses_to_start_without_any_one_secret(missing: str) -> None:
    env = _dummy_env()
    del env[missing]
    try:
        config = load_config(CONFIG, env)
    except ConfigError as exc:
        assert missing in str(exc)
        return
    context = SourceContext(env=env)  # the list sources read their secrets when they are made
    with pytest.raises(ValueError, match=missing):
        for spec in config.lists:
            make_source(spec, context)


def _unit() -> dict[str, dict[str, list[str]]]:
    """The unit's sections and keys (a key may repeat, as SystemCallFilter does)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in (DEPLOY / "livesafe.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, line
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_unit_runs_serve_hardened_with_its_state_directory_and_secrets_file() -> None:
    service = {key: values[-1] for key, values in _unit()["Service"].items()}
    assert service["ExecStart"].endswith("/livesafe serve --config /etc/livesafe/livesafe.toml")
    assert service["EnvironmentFile"] == "/etc/livesafe/secrets.env"  # no "-": a missing file stops it
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"  # livesafe's exit status for a bad config
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"  # livesafe.reload: keys, lists, webhooks, no restart
    assert service["User"] == "livesafe" and service["DynamicUser"] == "yes"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes"}.items():
        assert service[key] == value
    config = load_config(CONFIG, _dummy_env())
    assert Path(config.moderation.database).parent == Path("/var/lib") / service["StateDirectory"]
    assert _unit()["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_every_line_of_the_unit(tmp_path: Path) -> None:
    """``verify`` warns, exit 0, about an unknown key or a bad value: any output is a failure."""
    script = Path(sys.executable).with_name("livesafe")  # ExecStart must exist for verify
    unit = (DEPLOY / "livesafe.service").read_text().replace("/opt/livesafe/bin/livesafe", str(script))
    path = tmp_path / "livesafe.service"
    path.write_text(unit)
    done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), done.stderr


def test_a_config_mistake_exits_with_the_status_the_unit_does_not_restart_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "livesafe.toml"
    config.write_text("[server]\nprot = 8080\n")
    status = {key: values[-1] for key, values in _unit()["Service"].items()}["RestartPreventExitStatus"]
    assert main(["serve", "--config", str(config)]) == int(status)
    assert "unknown key(s) ['prot']" in capsys.readouterr().err


def test_the_documented_backup_copies_a_live_store_with_what_is_still_in_its_wal(tmp_path: Path) -> None:
    """docs/deploy.md's backup one-liner, run on a store whose last events are in the WAL only."""
    doc = (ROOT / "docs" / "deploy.md").read_text()
    code = re.search(r"python3 -c '([^']+)'", doc)
    assert code is not None
    live, copy = tmp_path / "livesafe.db", tmp_path / "backup.db"
    store = SqliteStore(live, interval=3600.0)  # the checkpointer stays asleep: the rows stay in the WAL
    try:
        for _ in range(20):
            store.events.append(Event("match.started", "studio"))
        assert (tmp_path / "livesafe.db-wal").stat().st_size > 0
        done = subprocess.run(
            [sys.executable, "-c", code.group(1), str(live), str(copy)], capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    finally:
        store.close()
    backup = SqliteStore(copy)
    try:
        assert backup.events.last_seq() == 20
        assert backup.database.connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        backup.close()
