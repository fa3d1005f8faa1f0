"""The configuration documented in docs/configuration.md is the configuration the code accepts."""

from __future__ import annotations

import re
from pathlib import Path

from harness import config_error, config_from

from livesafe.config import load_config

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_the_reference_example_config_loads_as_its_comments_say(tmp_path: Path) -> None:
    configuration = REFERENCE.read_text().split("\n## An example", 1)[1]
    block = re.search(r"```toml\n(.*?)```", configuration, re.S)
    assert block, "docs/configuration.md has a TOML example"
    config_path = tmp_path / "livesafe.toml"
    config_path.write_text(block.group(1))
    env = {"STUDIO_KEY": "from-the-environment", "ALICE_TOKEN": "a" * 24, "HOOK_SECRET": "whsec_c2VjcmV0"}
    env["LIVESAFE_JWT_SECRET"] = "j" * 32
    config = load_config(config_path, env=env)
    assert config.guard.sample_every == 5 and config.guard.deep_every == 2 and config.guard.delay_frames == 10
    assert config.guard.search.boxes == 12 and config.guard.search.rectify
    (spec,) = config.lists
    assert (spec.name, spec.category, spec.action, spec.threshold_for("pdq")) == ("samples", "test", "slate", 31)
    assert spec.path == tmp_path / "sample_streams" / "blocklist.txt"  # relative to the config file
    relay = config.relay
    assert (relay.host, relay.port, relay.ice.servers, relay.ice.host_addresses) == ("127.0.0.1", 8080, (), ())
    assert relay.workers == 1
    assert relay.stream.stall_seconds == 0.5 and relay.stream.ingest_frames == 4
    assert relay.overload.max_cpu_fraction == 0.85 and relay.overload.sustain_seconds == 2.0
    assert relay.streams["studio"].key == "from-the-environment" and not relay.dev_mode
    assert relay.streams["studio"].profile == "child" and relay.profiles["child"].reports_to_redact == 2
    assert relay.jwt is not None and relay.jwt.secret == "j" * 32 and relay.jwt.leeway_seconds == 30.0
    assert relay.hook is not None and (relay.hook.timeout_seconds, relay.hook.cache_seconds) == (2.0, 10.0)
    moderation = config.moderation
    assert moderation.database == str(tmp_path / "livesafe.db") and moderation.retention_days == 30.0
    assert [(p.name, p.role) for p in moderation.tokens] == [("alice", "moderator")]
    (hook,) = moderation.webhooks
    assert hook.categories == ("csam", "ncii") and hook.signing_key == b"secret"


def test_the_event_store_is_where_the_config_puts_it_else_in_the_current_directory(tmp_path) -> None:
    """A database the file names is relative to the file; none named: ``livesafe.db`` where livesafe runs,
    as the README and docs/configuration.md say, not silently next to the config file."""
    assert config_from(tmp_path, "[guard]\nsample_every = 5\n").moderation.database == "livesafe.db"
    named = config_from(tmp_path, '[moderation]\ndatabase = "store/events.db"\n').moderation.database
    assert named == str(tmp_path / "store" / "events.db")
    assert config_from(tmp_path, '[moderation]\ndatabase = ":memory:"\n').moderation.database == ":memory:"


def test_cluster_section_takes_its_secret_from_the_environment(tmp_path) -> None:
    text = '[cluster]\nredis_url = "redis://10.0.0.2:6379/0"\nnode_name = "node-a"\nheartbeat_seconds = 0.5\n'
    config = config_from(tmp_path, text, env={"LIVESAFE_CLUSTER_SECRET": "s" * 24})
    assert config.cluster is not None
    assert (config.cluster.redis_url, config.cluster.node_name, config.cluster.heartbeat_seconds) == (
        "redis://10.0.0.2:6379/0", "node-a", 0.5
    )  # fmt: skip
    assert "s" * 24 not in repr(config.cluster)
    named = config_from(tmp_path, text + 'secret_env = "MY_SECRET"\n', env={"MY_SECRET": "t" * 20})
    assert named.cluster is not None and named.cluster.secret == "t" * 20
    assert config_from(tmp_path, "").cluster is None
    for bad, message in (
        (text, "shared secret in the environment variable 'LIVESAFE_CLUSTER_SECRET'"),
        (text + 'secret = "in-the-file-0123456789"\n', "keep it out of the file"),
        ('[cluster]\nnode_name = "a"\n', "cluster.redis_url: required"),
        (text + "colour = 1\n", "unknown key(s) ['colour']"),
        (text.replace("0.5", '"fast"'), "cluster.heartbeat_seconds: expected float"),
        (text.replace("node-a", "node a"), "node_name 'node a'"),
        (text + 'signalling = "carrier-pigeon"\n', "signalling 'carrier-pigeon'"),
    ):
        env = {} if "environment" in message else {"LIVESAFE_CLUSTER_SECRET": "s" * 24}
        assert message in config_error(tmp_path, bad, env=env), bad
