"""The configuration documented in README.md is the configuration the code accepts."""

from __future__ import annotations

import re
from pathlib import Path

from livesafe.config import load_config

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_config_loads(tmp_path: Path) -> None:
    block = re.search(r"```toml\n(.*?)```", README.read_text(), re.S)
    assert block, "README has a TOML example"
    config_path = tmp_path / "livesafe.toml"
    config_path.write_text(block.group(1))
    env = {"STUDIO_KEY": "from-the-environment", "ALICE_TOKEN": "a" * 24, "HOOK_SECRET": "whsec_c2VjcmV0"}
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
    moderation = config.moderation
    assert moderation.database == str(tmp_path / "livesafe.db") and moderation.retention_days == 30.0
    assert [(p.name, p.role) for p in moderation.tokens] == [("alice", "moderator")]
    (hook,) = moderation.webhooks
    assert hook.categories == ("csam", "ncii") and hook.signing_key == b"secret"
