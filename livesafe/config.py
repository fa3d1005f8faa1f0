"""Typed settings from a TOML file (and the command line), validated at start.

Example::

    [guard]
    sample_every = 5        # hash every 5th frame, plus every cut
    delay_frames = 10       # output delay; must be >= sample_every
    hold_seconds = 3.0      # keep redacting this long after the last match

    [guard.regions]
    windows = ["left", "right", "top", "bottom"]

    [lists]
    skip_bad_lines = false  # true: load a list minus its bad lines (counted, reported)
    reload_seconds = 2.0

    [[lists.file]]
    path = "sample_streams/blocklist.txt"   # relative to this file
    name = "samples"
    category = "test"
    action = "slate"
    thresholds = { pdq = 31 }

A mistake in the file is reported as ``FILE: key: reason`` and stops start-up:
running with a misread list or setting would be running unguarded.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from livesafe.guard.regions import RegionSettings, window_names
from livesafe.guard.stream_guard import GuardSettings
from livesafe.lists import ListSpec


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Config:
    guard: GuardSettings = field(default_factory=GuardSettings)
    lists: tuple[ListSpec, ...] = ()
    skip_bad_lines: bool = False
    reload_seconds: float = 2.0

    def with_lists(self, extra: list[ListSpec]) -> "Config":
        return replace(self, lists=self.lists + tuple(extra))


def load_config(path: Path | None) -> Config:
    if path is None:
        return Config()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return _parse(data, Path(path).resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _parse(data: dict[str, Any], base: Path) -> Config:
    _only(data, {"guard", "lists"}, "")
    guard_data = dict(data.get("guard", {}))
    region_data = guard_data.pop("regions", {})
    regions = _build(RegionSettings, region_data, "guard.regions")
    unknown = set(regions.windows) - set(window_names())
    if unknown:
        raise ConfigError(f"guard.regions.windows: unknown {sorted(unknown)} (known: {', '.join(window_names())})")
    guard = _build(GuardSettings, {**guard_data, "regions": regions}, "guard")
    lists_data = dict(data.get("lists", {}))
    files = lists_data.pop("file", [])
    _only(lists_data, {"skip_bad_lines", "reload_seconds"}, "lists")
    specs = []
    for i, entry in enumerate(files):
        where = f"lists.file[{i}]"
        _only(entry, {"path", "name", "category", "action", "thresholds"}, where)
        if "path" not in entry:
            raise ConfigError(f"{where}: path is required")
        path = Path(entry["path"])
        try:
            specs.append(
                ListSpec(
                    path=path if path.is_absolute() else base / path,
                    name=str(entry.get("name", "")),
                    category=str(entry.get("category", "test")),
                    action=str(entry.get("action", "blur")),
                    thresholds=dict(entry.get("thresholds", {})),
                )
            )
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError("lists.file: list names must be unique")
    return Config(
        guard=guard,
        lists=tuple(specs),
        skip_bad_lines=bool(lists_data.get("skip_bad_lines", False)),
        reload_seconds=float(lists_data.get("reload_seconds", 2.0)),
    )


def _only(data: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(data) - allowed
    if unknown:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}unknown key(s) {sorted(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    _only(data, set(known), where)
    values: dict[str, Any] = {}
    for key, value in data.items():
        default = getattr(cls(), key)
        if isinstance(default, tuple):
            value = tuple(value)
        elif isinstance(default, bool) != isinstance(value, bool) or (
            not isinstance(default, bool) and isinstance(default, (int, float)) and not isinstance(value, (int, float))
        ):
            raise ConfigError(f"{where}.{key}: expected {type(default).__name__}, got {value!r}")
        values[key] = value
    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
