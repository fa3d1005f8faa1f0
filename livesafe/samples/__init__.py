"""What ``livesafe demo`` publishes and guards with, shipped in the package so the demo runs from any directory.

``blocked_cut.mp4`` and ``blocklist.txt`` are copies of the files of the same
names in the repository's ``sample_streams/`` (generated there by
``sample_streams/generate.py``; tests/test_packaging.py checks the copies are
the same bytes): a 6 s, 0.19 MB clip whose middle shows a benign stand-in
picture, and the list holding that picture's hash.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

CLIP = "blocked_cut.mp4"
BLOCKLIST = "blocklist.txt"  # beside the clip: the demo guards a --sample with the blocklist.txt next to it


def demo_clip() -> Path:
    """The shipped clip, as a path (a pip install unpacks package data to files; the demo's publisher
    and the list loader need a path, not a stream)."""
    return Path(str(resources.files(__name__).joinpath(CLIP)))
