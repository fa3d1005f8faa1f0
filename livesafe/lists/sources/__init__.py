"""Where lists come from: one ``Source`` class per kind, built from a ``ListSpec`` by ``make_source``."""

from __future__ import annotations

from livesafe.lists.model import ListSpec
from livesafe.lists.sources.bank import BankSource
from livesafe.lists.sources.base import RetryLater, Source, SourceContext, SourceStatus
from livesafe.lists.sources.file import FileSource
from livesafe.lists.sources.ncmec import NcmecSource
from livesafe.lists.sources.state import SourceState
from livesafe.lists.sources.stopncii import StopNciiSource
from livesafe.lists.sources.threatexchange import ThreatExchangeSource
from livesafe.lists.sources.url import UrlSource

SOURCE_KINDS: dict[str, type[Source]] = {
    cls.KIND: cls for cls in (FileSource, UrlSource, NcmecSource, StopNciiSource, ThreatExchangeSource, BankSource)
}


def make_source(spec: ListSpec, context: SourceContext) -> Source:
    """The source ``spec.kind`` names; ValueError (for the config's error) on an unknown kind or bad options."""
    cls = SOURCE_KINDS.get(spec.kind)
    if cls is None:
        raise ValueError(f"list {spec.name!r}: unknown kind {spec.kind!r} (known: {', '.join(sorted(SOURCE_KINDS))})")
    return cls(spec, context)


__all__ = [
    "SOURCE_KINDS",
    "BankSource",
    "FileSource",
    "RetryLater",
    "Source",
    "SourceContext",
    "SourceState",
    "SourceStatus",
    "UrlSource",
    "make_source",
]
