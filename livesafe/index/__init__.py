"""Blocklist search: which stored hash, if any, is within a distance of each query."""

from livesafe.index.hamming import HammingIndex

__all__ = ["HammingIndex"]
