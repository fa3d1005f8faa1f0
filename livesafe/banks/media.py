"""Reading what is banked into view hashes: an image or a video, from bytes held in memory.

The bytes come from a file the operator named (``livesafe bank add``) or from an
upload (``POST /api/banks/...``), and are never written anywhere: an upload is
decoded from memory (PyAV reads a ``BytesIO``), so no copy of the content is
left on disk, not even a temporary one.  What comes out is hashes and where
they come from (view, frame time): nothing from which a picture could be
rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

from livesafe.banks.views import ViewHash, view_hashes
from livesafe.scan import ScanError, open_video, sample_frames
from livesafe.signals import SIGNALS, SignalType
from livesafe.signals.pdq import luma_from_rgb

MAX_SAMPLES = 600  # sampled frames of one video (x ~130 views each)
PDQ = SIGNALS["pdq"]
MAX_PIXELS = 100_000_000  # an image's width x height


class BankError(ValueError):
    """Content that cannot be banked; ``str()`` names the file and says why."""


@dataclass(frozen=True)
class HashedContent:
    """What a bank keeps of one image or video: its hashes, each with its view and frame time (video)."""

    kind: str  # "image" or "video"
    sha256: str  # of the bytes: the same file banked twice is noticed
    hashes: list[tuple[ViewHash, float | None]]
    frames: int  # frames hashed (1 for an image)
    flat_views: int  # views too flat to hash


def read_limited(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, or a BankError saying why not (missing, not a file, unreadable, over ``max_bytes``)."""
    try:
        with open(path, "rb") as file:
            st = os.fstat(file.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise BankError(f"{path}: not a regular file")
            if st.st_size > max_bytes:
                raise BankError(f"{path}: {st.st_size:,} bytes, over the limit of {max_bytes:,}")
            data = file.read(max_bytes + 1)
    except FileNotFoundError:
        raise BankError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BankError(f"{path}: is a directory") from None
    except OSError as exc:
        raise BankError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:  # it grew while we read
        raise BankError(f"{path}: over the limit of {max_bytes:,} bytes")
    return data


def hash_content(data: bytes, label: str, signals: list[SignalType], every: float = 1.0) -> HashedContent:
    """Hash ``data`` (an image, else a video sampled every ``every`` seconds); BankError if it is neither.

    ``label`` names the content in errors (a file name, an upload's field).
    """
    if not data:
        raise BankError(f"{label}: empty")
    sha256 = hashlib.sha256(data).hexdigest()
    _check_size(data, label)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is not None:
        found, flat = view_hashes(luma_from_rgb(image[..., ::-1]), 1.0, signals)
        hashes: list[tuple[ViewHash, float | None]] = [(h, None) for h in found]
        content = HashedContent("image", sha256, hashes, 1, flat)
    else:
        content = _hash_video(data, label, signals, every, sha256)
    if not content.hashes:
        raise BankError(f"{label}: too flat to hash (every view has quality < 50): nothing a stream shows could match")
    return content


def _check_size(data: bytes, label: str) -> None:
    """Refuse an image whose header promises more than MAX_PIXELS before it is decoded (a decompression bomb:
    a few kilobytes of PNG can declare gigabytes of pixels).  PIL reads only the header here."""
    try:
        with warnings.catch_warnings():  # PIL's warning for a large image: the limit is checked right here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:
        raise BankError(f"{label}: {exc}") from None
    except (OSError, ValueError):  # not an image PIL knows: OpenCV or PyAV decide
        return
    if width * height > MAX_PIXELS:
        raise BankError(f"{label}: {width}x{height} pixels, over the limit of {MAX_PIXELS:,}")


def _hash_video(data: bytes, label: str, signals: list[SignalType], every: float, sha256: str) -> HashedContent:
    """The views of a frame every ``every`` seconds and of each cut between them (as ``livesafe hash``
    samples): a shot shorter than the step must not fall between two samples."""
    try:
        container = open_video(io.BytesIO(data), label)
    except ScanError as exc:
        raise BankError(f"{exc} (and not an image OpenCV can read)") from None
    hashes: list[tuple[ViewHash, float | None]] = []
    frames = flat = 0
    with container:
        try:
            for sample in sample_frames(container.decode(video=0), every, PDQ):
                frames += 1
                if frames > MAX_SAMPLES:
                    raise BankError(
                        f"{label}: more than {MAX_SAMPLES} frames to hash at one every {every:g} s; "
                        "bank it with a longer interval (--every / every=)"
                    )
                found, flat_here = view_hashes(sample.luma, sample.scale, signals)
                hashes += [(h, round(sample.time, 3)) for h in found]
                flat += flat_here
        except av.FFmpegError as exc:
            raise BankError(f"{label}: damaged video after {frames} sampled frame(s): {exc}") from None
    if frames == 0:
        raise BankError(f"{label}: a video without a frame that decodes")
    return HashedContent("video", sha256, hashes, frames, flat)
