"""The docs cannot drift from the code: docs/configuration.md documents exactly the keys the config
loader accepts (livesafe.config.config_keys(), the loader's own key sets), with their defaults, and
every TOML example in the README and docs/ loads with the loader."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from harness import ROOT

from livesafe.banks.store import BankStore
from livesafe.config import NO_DEFAULT, config_keys, load_config
from livesafe.lists.sources import SourceContext, make_source

REFERENCE = ROOT / "docs" / "configuration.md"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _table_paths(heading: str) -> list[str]:
    """``[server.ice]`` -> server.ice, ``[[webhooks]]`` -> webhooks[], ``[[lists.source]] kind = "url"`` ->
    lists.source[kind=url]: the names config_keys() gives the tables."""
    kind = re.search(r'kind = "(\w+)"', heading)
    paths = []
    for brackets, name in re.findall(r"`(\[\[?)([\w.]+)\]", heading):
        path = f"{name}[]" if brackets == "[[" else name
        paths.append(f"{name}[kind={kind.group(1)}]" if kind else path)
    return paths


def _documented() -> dict[str, dict[str, str]]:
    """Table -> key -> its default cell, from the reference's "Every key" tables."""
    text = REFERENCE.read_text(encoding="utf-8").split("\n## Every key\n", 1)[1]
    tables: dict[str, dict[str, str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("### "):
            current = _table_paths(line)
            assert current, f"a heading that names no table: {line}"
            for path in current:
                assert path not in tables, f"{path} documented twice"
                tables[path] = {}
        elif line.startswith("| `") and current:
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            for key in re.findall(r"`(\w+)`", cells[0]):
                for path in current:
                    assert key not in tables[path], f"{path}.{key} documented twice"
                    tables[path][key] = cells[2]
    return tables


DOCUMENTED = _documented()
ACCEPTED = config_keys()


def test_every_table_the_loader_reads_is_documented_and_no_other() -> None:
    assert sorted(DOCUMENTED) == sorted(ACCEPTED)


@pytest.mark.parametrize("table", sorted(ACCEPTED))
def test_every_key_is_documented_and_every_documented_key_is_accepted(table: str) -> None:
    documented, accepted = set(DOCUMENTED.get(table, {})), set(ACCEPTED[table])
    assert not accepted - documented, f"[{table}]: undocumented key(s) {sorted(accepted - documented)}"
    assert not documented - accepted, f"[{table}]: documented but not accepted {sorted(documented - accepted)}"


def _literals(cell: str) -> Iterator[Any]:
    for text in re.findall(r"`([^`]+)`", cell):
        try:
            yield tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            continue


@pytest.mark.parametrize("table", sorted(ACCEPTED))
def test_documented_defaults_are_the_code_defaults(table: str) -> None:
    """A key with one default value (not a secret, not required, not derived) shows exactly that value."""
    for key, default in ACCEPTED[table].items():
        if default is NO_DEFAULT or default is None or isinstance(default, tuple):
            continue
        cell = DOCUMENTED.get(table, {}).get(key, "")
        assert default in list(_literals(cell)), f"[{table}] {key}: default {default!r}, documented {cell!r}"


class _AnyEnv(Mapping[str, str]):
    """Every environment variable an example names is set (to a secret long enough for any key)."""

    def __getitem__(self, key: str) -> str:
        return "1234567890|example-secret-0123456789abcdef"  # long enough for any key; a ThreatExchange token too

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __contains__(self, key: object) -> bool:
        return True


def _toml_blocks() -> list[tuple[str, str]]:
    blocks = []
    for doc in DOCS:
        for i, block in enumerate(re.findall(r"^```toml\n(.*?)^```", doc.read_text(encoding="utf-8"), re.M | re.S)):
            blocks.append((f"{doc.relative_to(ROOT)}#{i}", block))
    return blocks


TOML_BLOCKS = _toml_blocks()


def test_the_docs_have_toml_examples_to_check() -> None:
    assert len(TOML_BLOCKS) >= 5 and any(name.startswith("docs/configuration.md") for name, _ in TOML_BLOCKS)


@pytest.mark.parametrize(("name", "block"), TOML_BLOCKS, ids=[name for name, _ in TOML_BLOCKS])
def test_every_toml_example_loads_with_the_config_loader(tmp_path: Path, name: str, block: str) -> None:
    config = tmp_path / "livesafe.toml"
    config.write_text(block, encoding="utf-8")
    loaded = load_config(config, _AnyEnv())  # a ConfigError names the example's mistake
    for spec in loaded.lists:  # a list's kind options are checked when its source is built (nothing fetched yet)
        make_source(spec, SourceContext(banks=BankStore(":memory:") if spec.kind == "bank" else None, env=_AnyEnv()))


def _anchors(doc: Path) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings (lower case, punctuation dropped, spaces to '-')."""
    text = re.sub(r"^```.*?^```", "", doc.read_text(encoding="utf-8"), flags=re.M | re.S)
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


LINKS = [
    (doc, target)
    for doc in DOCS
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8"))
    if not target.startswith(("http://", "https://", "mailto:"))
]


@pytest.mark.parametrize(("doc", "target"), LINKS, ids=[f"{d.name}->{t}" for d, t in LINKS])
def test_every_link_between_the_docs_leads_somewhere(doc: Path, target: str) -> None:
    """Sections moved between README and docs/ keep their links working: the file and the heading exist."""
    path, _, anchor = target.partition("#")
    file = (doc.parent / path).resolve() if path else doc
    assert file.exists(), f"{doc.name}: {target}: no such file"
    if anchor:
        assert anchor in _anchors(file), f"{doc.name}: {target}: no such heading in {file.name}"


# A table the probe can put a key into: the TOML that opens it, with what the table needs besides.
_OPENERS = {
    "streams.NAME": "[streams.s]",
    "profiles.NAME": "[profiles.p]",
    "moderation.tokens.NAME": "[moderation.tokens.t]",
    "webhooks[]": "[[webhooks]]",
    "server.ice.servers[]": "[[server.ice.servers]]\nurls = ['stun:127.0.0.1']",
    "lists.file[]": "[[lists.file]]\npath = 'x.txt'\ncategory = 'test'",
    "lists.source[]": "[[lists.source]]\nkind = 'file'\npath = 'x.txt'\ncategory = 'test'",
    "auth.hook": "[auth.hook]\nurl = 'http://127.0.0.1/'",
    "cluster": "[cluster]\nredis_url = 'redis://127.0.0.1:6379/0'",
}
for _kind in ("url", "ncmec", "stopncii", "threatexchange", "bank"):
    _OPENERS[f"lists.source[kind={_kind}]"] = f"[[lists.source]]\nkind = '{_kind}'\nname = 'x'\ncategory = 'test'"


def _refusal(tmp_path: Path, text: str) -> str:
    """What the loader (and, for lists, building the list's source) says of ``text``; "" if it takes it."""
    config = tmp_path / "probe.toml"
    config.write_text(text, encoding="utf-8")
    try:
        for spec in load_config(config, _AnyEnv()).lists:
            make_source(spec, SourceContext(banks=BankStore(":memory:"), env=_AnyEnv()))
    except ValueError as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize("table", sorted(ACCEPTED))
def test_every_key_config_keys_lists_is_one_the_loader_takes(tmp_path: Path, table: str) -> None:
    """config_keys() against the loader itself: each key, set in its table, is not refused as unknown
    (a wrong probe value may be refused for its value: that is the loader reading the key)."""
    opener = _OPENERS.get(table, f"[{table}]")
    sentinel = _refusal(tmp_path, f"{opener}\nsurely_not_a_key = 1\n")
    assert re.search(r"(unknown key\(s\)|no option) .*'surely_not_a_key'", sentinel), sentinel  # the probe gets there
    for key in ACCEPTED[table]:
        if re.search(rf"^{key} =", opener, re.M):
            continue  # the opener sets it already
        said = _refusal(tmp_path, f"{opener}\n{key} = 'probe'\n")
        assert not re.search(rf"(unknown key\(s\)|no option) .*'{key}'", said), f"[{table}] {key}: {said}"
