"""The moderation parts of the TOML file: [moderation], its tokens, [[webhooks]],
[profiles.NAME] and a stream's profile.  A mistake must stop start-up with the key's
path in the message -- a misread token table would leave the API shut (or, worse, a
misplaced one silently open in dev mode), a misread webhook would page no one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from harness import config_error, config_from

from livesafe.moderation.settings import ModerationSettings
from livesafe.policy import CHILD, DEFAULT

ALICE = "alice-token-0123456789"
BOB = "bob-token-abcdefghijkl"
HOOK_SECRET = "hook-secret-31b8e7"


def test_no_moderation_section_gives_the_defaults(tmp_path: Path) -> None:
    moderation = config_from(tmp_path, "").moderation
    defaults = ModerationSettings()
    assert moderation.tokens == () and moderation.webhooks == ()
    assert moderation.retention_days == defaults.retention_days and moderation.preview is False
    assert moderation.database == defaults.database  # livesafe.db where livesafe runs, as with no config file


def test_moderation_keys_and_database_relative_to_the_config_file(tmp_path: Path) -> None:
    text = """
[moderation]
database = "data/events.db"
retention_days = 7
audit_retention_days = 400.5
reports_per_client = 2
report_client_window_seconds = 30
webhook_timeout_seconds = 2
webhook_backoff_seconds = 0.5
webhook_max_backoff_seconds = 60
webhook_give_up_hours = 1
preview = true
"""
    moderation = config_from(tmp_path, text).moderation
    assert moderation.database == str(tmp_path / "data" / "events.db")
    assert (moderation.retention_days, moderation.audit_retention_days) == (7, 400.5)
    assert (moderation.reports_per_client, moderation.report_client_window_seconds) == (2, 30)
    assert (moderation.webhook_timeout_seconds, moderation.webhook_backoff_seconds) == (2, 0.5)
    assert (moderation.webhook_max_backoff_seconds, moderation.webhook_give_up_hours) == (60, 1)
    assert moderation.preview is True


@pytest.mark.parametrize("database", [":memory:", "/var/lib/livesafe/events.db"])
def test_memory_and_absolute_databases_are_kept_as_given(tmp_path: Path, database: str) -> None:
    assert config_from(tmp_path, f'[moderation]\ndatabase = "{database}"\n').moderation.database == database


def test_tokens_from_the_file_and_from_the_environment(tmp_path: Path) -> None:
    text = f"""
[moderation.tokens.alice]
token_env = "ALICE_TOKEN"
role = "moderator"

[moderation.tokens.bob]
token = "{BOB}"
role = "observer"
"""
    moderation = config_from(tmp_path, text, env={"ALICE_TOKEN": ALICE}).moderation
    assert sorted((p.name, p.role) for p in moderation.tokens) == [("alice", "moderator"), ("bob", "observer")]
    assert moderation.principal(ALICE).name == "alice" and moderation.principal(BOB).name == "bob"
    assert moderation.principal("ALICE_TOKEN") is None  # the variable's name is not the token


def test_webhooks_with_filters(tmp_path: Path) -> None:
    text = """
[[webhooks]]
url = "https://user:pw@hooks.example.com/livesafe?k=v"
secret_env = "HOOK_SECRET"
categories = ["csam", "ncii"]
types = ["match.started"]
min_severity = "warning"

[[webhooks]]
url = "http://127.0.0.1:9000/in"
secret = "whsec_c2VjcmV0"
name = "local"
"""
    first, second = config_from(tmp_path, text, env={"HOOK_SECRET": HOOK_SECRET}).moderation.webhooks
    assert (first.categories, first.types, first.min_severity) == (("csam", "ncii"), ("match.started",), "warning")
    assert first.signing_key == HOOK_SECRET.encode() and first.name == "hooks.example.com/livesafe"
    assert first.display_url == "https://hooks.example.com/livesafe"  # no credentials, no query
    assert (second.name, second.signing_key, second.categories, second.min_severity) == ("local", b"secret", (), "info")


def test_profile_overrides_a_builtin_and_defines_a_new_one(tmp_path: Path) -> None:
    text = """
[profiles.child]
reports_to_redact = 1

[profiles.strict]
min_action = "blur"
match_severity = "high"
recorder_agents = ["curl/"]

[streams.kids]
key = "kids-key-0123"
profile = "child"

[streams.news]
key = "news-key-0123"
profile = "strict"

[streams.other]
key = "other-key-0123"
"""
    relay = config_from(tmp_path, text).relay
    child, strict = relay.profiles["child"], relay.profiles["strict"]
    assert child.reports_to_redact == 1
    assert (child.min_action, child.match_severity, child.refuse_recording, child.report_action) == (
        CHILD.min_action, CHILD.match_severity, CHILD.refuse_recording, CHILD.report_action)  # fmt: skip
    assert strict.name == "strict" and (strict.min_action, strict.match_severity) == ("blur", "high")
    assert strict.recorder_agents == ("curl/",) and strict.is_recorder("curl/8.5")
    assert strict.reports_to_redact == DEFAULT.reports_to_redact  # the rest from default
    assert relay.profiles["default"] == DEFAULT
    assert {name: s.profile for name, s in relay.streams.items()} == {
        "kids": "child",
        "news": "strict",
        "other": "default",
    }


def test_config_repr_shows_no_token_secret_or_webhook_credentials(tmp_path: Path) -> None:
    text = f"""
[moderation.tokens.alice]
token = "{ALICE}"
role = "moderator"

[[webhooks]]
url = "https://user:url-password@hooks.example.com/in?sig=url-query-secret"
secret = "{HOOK_SECRET}"
"""
    config = config_from(tmp_path, text)
    shown = repr(config) + repr(config.moderation) + str(config.moderation.tokens) + str(config.moderation.webhooks)
    for secret in (ALICE, HOOK_SECRET, "url-password", "url-query-secret"):
        assert secret not in shown


def test_token_errors_do_not_echo_the_token(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[moderation.tokens.alice]\ntoken = "short-sekrit"\nrole = "moderator"\n')
    assert "moderation.tokens.alice" in message and "short-sekrit" not in message


@pytest.mark.parametrize(
    "text, env, expected",
    [
        # [moderation] itself
        ("[moderation]\nretention = 3\n", {}, r"moderation: unknown key\(s\) \['retention'\]"),
        ("[moderation]\nretention_days = '30'\n", {}, r"moderation\.retention_days: expected float, got '30'"),
        ("[moderation]\nretention_days = 0\n", {}, r"moderation: retention_days must be > 0"),
        ("[moderation]\nreports_per_client = 0\n", {}, r"moderation: reports_per_client must be at least 1"),
        ("[moderation]\npreview = 'yes'\n", {}, r"moderation\.preview: expected bool"),
        ("[moderation]\ndatabase = 5\n", {}, r"moderation\.database: expected str"),
        ("moderation = 1\n", {}, r"moderation: expected a table"),
        # tokens and webhooks misplaced as keys of [moderation]
        ("[moderation]\ntokens = 'alice-token-0123456789'\n", {}, r"moderation\.tokens: expected a table"),
        (
            "[moderation]\nwebhooks = [{ url = 'https://h.example/x', secret = 's' }]\n",
            {},
            r"moderation: unknown key\(s\) \['webhooks'\]",
        ),
        (
            "[[moderation.webhooks]]\nurl = 'https://h.example/x'\nsecret = 's'\n",
            {},
            r"moderation: unknown key\(s\) \['webhooks'\]",
        ),
        ("[moderation.tokens]\nalice = 'alice-token-0123456789'\n", {}, r"moderation\.tokens\.alice: expected a table"),
        # tokens
        (
            "[moderation.tokens.alice]\ntoken_env = 'ALICE_TOKEN'\nrole = 'moderator'\n",
            {},
            r"moderation\.tokens\.alice\.token_env: environment variable 'ALICE_TOKEN' is not set",
        ),
        (
            "[moderation.tokens.alice]\ntoken = 'alice-token-0123456789'\nrole = 'admin'\n",
            {},
            r"moderation\.tokens\.alice: role 'admin': expected one of observer, moderator",
        ),
        (
            "[moderation.tokens.alice]\ntoken = 'short'\nrole = 'observer'\n",
            {},
            r"moderation\.tokens\.alice: token of 'alice': use at least 16 characters",
        ),
        (
            "[moderation.tokens.alice]\ntoken_env = 'ALICE_TOKEN'\nrole = 'observer'\n",
            {"ALICE_TOKEN": "short"},
            r"moderation\.tokens\.alice: token of 'alice': use at least 16 characters",
        ),
        (
            "[moderation.tokens.alice]\ntoken = 'alice-token-0123456789'\n"
            "token_env = 'ALICE_TOKEN'\nrole = 'observer'\n",
            {"ALICE_TOKEN": "alice-token-0123456789"},
            r"moderation\.tokens\.alice: give token or token_env, not both",
        ),
        (
            "[moderation.tokens.alice]\ntoken = 'alice-token-0123456789'\n",
            {},
            r"moderation\.tokens\.alice: token \(or token_env\) and role are required",
        ),
        (
            "[moderation.tokens.alice]\nrole = 'moderator'\n",
            {},
            r"moderation\.tokens\.alice: token \(or token_env\) and role are required",
        ),
        (
            "[moderation.tokens.alice]\ntoken = ''\nrole = 'moderator'\n",
            {},
            r"moderation\.tokens\.alice\.token: expected a non-empty string",
        ),
        (
            "[moderation.tokens.alice]\ntoken = 'alice-token-0123456789'\nrole = 'moderator'\nrights = 'all'\n",
            {},
            r"moderation\.tokens\.alice: unknown key\(s\) \['rights'\]",
        ),
        # webhooks
        (
            "[[webhooks]]\nurl = 'https://hooks.example.com/in'\n",
            {},
            r"webhooks\[0\]: url and secret \(or secret_env\) are required",
        ),
        ("[[webhooks]]\nsecret = 's'\n", {}, r"webhooks\[0\]: url and secret \(or secret_env\) are required"),
        (
            "[[webhooks]]\nurl = 'https://hooks.example.com/in'\nsecret_env = 'HOOK'\n",
            {},
            r"webhooks\[0\]\.secret_env: environment variable 'HOOK' is not set",
        ),
        (
            "[[webhooks]]\nurl = 'https://a.example/in'\nsecret = 's'\n"
            "[[webhooks]]\nurl = 'ftp://b.example/in'\nsecret = 's'\n",
            {},
            r"webhooks\[1\]: webhook url 'ftp://b\.example/in': expected http\(s\)://host/",
        ),
        ("[[webhooks]]\nurl = 'https:///no-host'\nsecret = 's'\n", {}, r"webhooks\[0\]: webhook url"),
        (
            "[[webhooks]]\nurl = 'https://hooks.example.com/in'\nsecret = 's'\nmin_severity = 'critical'\n",
            {},
            r"webhooks\[0\]: min_severity 'critical': expected one of info, warning, high",
        ),
        (
            "[[webhooks]]\nurl = 'https://hooks.example.com/in'\nsecret = 's'\ncategories = 'csam'\n",
            {},
            r"webhooks\[0\]\.categories: expected a list of strings, got 'csam'",
        ),
        (
            "[[webhooks]]\nurl = 'https://hooks.example.com/in'\nsecret = 's'\ntypes = ['match.started', 3]\n",
            {},
            r"webhooks\[0\]\.types: expected a list of strings",
        ),
        (
            "[[webhooks]]\nurl = 'https://hooks.example.com/in'\nsecret = 'whsec_not base64!'\n",
            {},
            r"webhooks\[0\]: webhook secret starting whsec_ must be base64 after the prefix",
        ),
        (
            "[[webhooks]]\nurl = 'https://hooks.example.com/in'\nsecret = 's'\nretries = 3\n",
            {},
            r"webhooks\[0\]: unknown key\(s\) \['retries'\]",
        ),
        (
            "[[webhooks]]\nurl = 'https://a.example/in'\nsecret = 's'\nname = 'x'\n"
            "[[webhooks]]\nurl = 'https://b.example/in'\nsecret = 's'\nname = 'x'\n",
            {},
            r"moderation: webhook names must be unique",
        ),
        (
            "[webhooks]\nurl = 'https://hooks.example.com/in'\nsecret = 's'\n",
            {},
            r"webhooks: expected an array of tables",
        ),
        # profiles and streams
        (
            "[profiles.strict]\nname = 'lax'\n",
            {},
            r"profiles\.strict: the table's name is the profile's name \(no name key\)",
        ),
        ("[profiles.child]\nname = 'child'\n", {}, r"profiles\.child: the table's name is the profile's name"),
        (
            "[profiles.strict]\nmin_action = 'nuke'\n",
            {},
            r"profiles\.strict: min_action 'nuke': expected pass, blur or slate",
        ),
        ("[profiles.strict]\nreports_to_redact = 'two'\n", {}, r"profiles\.strict\.reports_to_redact: expected int"),
        ("[profiles.strict]\nblur = true\n", {}, r"profiles\.strict: unknown key\(s\) \['blur'\]"),
        ("[profiles]\nstrict = 'slate'\n", {}, r"profiles\.strict: expected a table"),
        (
            "[streams.s]\nkey = 'stream-key-0123'\nprofile = 'kids'\n",
            {},
            r"streams: stream 's': unknown profile 'kids' \(known: child, default\)",
        ),
        (
            "[streams.s]\nkey = 'stream-key-0123'\nprofile = 3\n",
            {},
            r"streams\.s\.profile: expected a profile name, got 3",
        ),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, env: dict[str, str], expected: str) -> None:
    message = config_error(tmp_path, text, env)
    assert re.search(expected, message), message
