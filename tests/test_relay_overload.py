"""Overload protection decides from what it measures: the event loop running late, or
several streams falling behind real time; it sheds the newest stream, one at a time."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from harness import FAST_END, ICE, SAMPLES, running_relay

from livesafe.clients import ClientError, publish
from livesafe.relay.overload import LoadShedder, OverloadSettings
from livesafe.relay.settings import RelaySettings


@dataclass
class Stream:
    id: str
    started: float
    lateness: float = 0.0
    publisher: object | None = "session"


SETTINGS = OverloadSettings(lateness_seconds=0.4, loop_lag_seconds=0.1, sustain_seconds=1.0, shed_interval_seconds=1.5)


def test_one_late_stream_is_its_own_network_not_overload():
    shedder = LoadShedder(SETTINGS)
    streams = [Stream("a", 1, lateness=3.0), Stream("b", 2)]
    assert all(shedder.assess(t / 10, 0.0, streams) is None for t in range(50))
    assert not shedder.overloaded


def test_sustained_overload_sheds_the_newest_stream_one_at_a_time_until_it_recovers():
    shedder = LoadShedder(SETTINGS)
    streams = [Stream("old", 1, 0.9), Stream("newest", 3, 0.8), Stream("middle", 2, 0.7)]
    assert shedder.assess(0.0, 0.0, streams) is None  # overloaded, but not yet for 1 s
    assert not shedder.overloaded
    assert shedder.assess(0.5, 0.0, streams) is None
    victim = shedder.assess(1.0, 0.0, streams)
    assert victim is streams[1]
    victim.publisher = None  # cut
    assert shedder.assess(2.0, 0.0, streams) is None, "a pause after each cut"
    assert shedder.assess(2.5, 0.0, streams) is streams[2], "still overloaded after the pause: next newest"
    streams[2].publisher = None
    streams[0].lateness = 0.0
    assert shedder.assess(4.1, 0.0, streams) is None
    assert not shedder.overloaded and shedder.shed == 2


def test_a_late_event_loop_alone_is_overload():
    shedder = LoadShedder(SETTINGS)
    streams = [Stream("a", 1), Stream("b", 2)]
    assert shedder.assess(0.0, 0.3, streams) is None
    assert shedder.assess(1.2, 0.3, streams) is streams[1]
    # A momentary lag that does not last is not.
    calm = LoadShedder(SETTINGS)
    assert calm.assess(0.0, 0.3, streams) is None
    assert calm.assess(0.1, 0.0, streams) is None and not calm.overloaded


async def test_an_overloaded_relay_refuses_new_publishers_and_cuts_the_newest_stream():
    """A threshold any event loop exceeds (1 µs late), sustained 3 s: the relay is overloaded."""
    events = []
    overload = OverloadSettings(loop_lag_seconds=1e-6, sustain_seconds=3.0)
    async with running_relay(RelaySettings(ice=ICE, stream=FAST_END, overload=overload)) as r:
        r.relay._on_event = events.append
        first = asyncio.ensure_future(publish(SAMPLES / "benign_mix.mp4", r.url("whip", "a"), ice=ICE, duration=10))
        await r.wait_for(lambda relay: "a" in relay.streams and relay.streams["a"].counters.frames_in > 0)
        await r.wait_for(lambda relay: relay.shedder.overloaded, timeout=5)
        with pytest.raises(ClientError, match="503"):
            await publish(SAMPLES / "benign_mix.mp4", r.url("whip", "b"), ice=ICE, duration=1)
        await r.wait_for(lambda relay: relay.streams["a"].publisher is None, timeout=5)
        with pytest.raises(ClientError):
            await first
    assert any(e.type == "stream.cut" and "overload" in e.details["reason"] for e in events)


def test_admission_counts_what_running_streams_cost_and_those_still_ramping_up():
    shedder = LoadShedder(OverloadSettings(max_cpu_fraction=0.85, stream_cost_cores=0.35, ramp_seconds=3.0), cores=2)
    # Four publishers at once, nothing measured yet: 4 x 0.35 = 1.4 cores fits in 1.7, a fifth does not.
    assert [shedder.admit(0.0, live) for live in range(5)] == [True, True, True, True, False]
    # Later the four settled streams measure 1.2 cores: 0.3 each, so a fifth fits (1.5), a sixth not.
    shedder.cpu = 1.2
    assert shedder.admit(10.0, 4) is True
    assert shedder.admit(10.1, 5) is False, "the fifth is still ramping up: counted at 0.3"
    shedder.cpu = 1.5
    assert shedder.admit(20.0, 5) is False
    shedder.measure_cpu(cpu_seconds=0.0, wall_seconds=1.0)  # a quiet second: smoothing follows
    assert shedder.cpu == 0.0 and shedder.admit(21.0, 0)
