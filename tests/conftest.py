"""Shared fixtures: an HTTP client session, the 360p ``blocked_cut`` clip, natural photos
(scikit-image's bundled, permissively licensed samples), and a private network for the
WebRTC tests.

The machines we test on have a real network interface, and WebRTC would
gather candidates on it.  So the whole test run moves into a network
namespace of its own whose only interface is loopback (``unshare`` of the
network namespace, then ``ip link set lo up``); threads and subprocesses
started later inherit it.  That needs root (CI has it); elsewhere the tests
still confine ICE to 127.0.0.1 and configure no STUN server, so nothing
leaves the machine either way.  ``LIVESAFE_TEST_NETNS=0`` skips the namespace.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from harness import SAMPLES, downscale_clip

CLONE_NEWNET = 0x40000000


def _enter_private_network() -> str:
    if os.environ.get("LIVESAFE_TEST_NETNS", "1") == "0":
        return "off (LIVESAFE_TEST_NETNS=0); ICE confined to 127.0.0.1"
    if os.geteuid() != 0:
        return "not root: no network namespace; ICE confined to 127.0.0.1"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return f"unshare failed ({os.strerror(ctypes.get_errno())}); ICE confined to 127.0.0.1"
    _loopback_up()
    return "private network namespace, loopback only"


def _loopback_up() -> None:
    """``ip link set lo up`` without needing iproute2: SIOCGIFFLAGS / SIOCSIFFLAGS on ``lo``."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))


NETWORK = _enter_private_network()


def pytest_report_header() -> str:
    return f"livesafe network: {NETWORK}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="session")
def blocked_cut_360p(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``blocked_cut`` at 640x360 (same frames, its blocked segment at 2.5-4.0 s), light to publish.

    Encoded once a run.
    """
    return downscale_clip(SAMPLES / "blocked_cut.mp4", tmp_path_factory.mktemp("clips") / "blocked_cut_360p.mp4")


pytest.importorskip("skimage.data")

from sample_streams import synthetic  # noqa: E402  (needs scikit-image)


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    return {**synthetic.blocked_images(), **synthetic.benign_images()}


@pytest.fixture
def redis_server(tmp_path: Path):
    """A fresh, empty ``redis-server`` on 127.0.0.1 for one test."""
    from redis_harness import RedisServer

    server = RedisServer(tmp_path).start()
    yield server
    server.stop()
