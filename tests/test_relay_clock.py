"""The relay's output clock: source time kept (gaps stay gaps), strictly increasing across a
new publisher clock, and late frames after a stall squeezed in after the slate."""

from __future__ import annotations

from fractions import Fraction

from livesafe.relay.encoder import VIDEO_CLOCK, Timeline

TB = Fraction(1, 90000)


def clock() -> Timeline:
    return Timeline(VIDEO_CLOCK, nominal_step=3000, max_step=900_000)


def test_steps_and_gaps_of_the_source_are_kept():
    t = clock()
    out = [t.next(pts, TB) for pts in (1000, 4000, 7000, 16000)]  # 16000: two frames dropped
    assert [b - a for a, b in zip(out, out[1:], strict=False)] == [3000, 3000, 9000]


def test_a_new_publisher_clock_continues_one_frame_later():
    t = clock()
    first = [t.next(pts, TB) for pts in (5_000_000, 5_003_000)]
    after = t.next(123, TB)  # reconnect: a random new RTP clock, far behind
    assert after == first[-1] + 3000
    assert t.next(3123, TB) == after + 3000
    jump = t.next(3123 + 50 * 90000, TB)  # 50 s ahead: also a new clock
    assert jump == after + 6000


def test_frames_late_after_a_slate_are_squeezed_in_then_time_resumes():
    t = clock()
    last = t.next(0, TB)
    slate_end = t.skip(1.0)  # one second of slate while the input was stuck
    assert slate_end == last + 90000
    stuck = t.next(3000, TB)  # the frame the worker was stuck on (source time 33 ms)
    assert slate_end < stuck < slate_end + 3000
    resumed = t.next(3000 + 2 * 90000, TB)  # two seconds of source time later
    assert resumed == last + 2 * 90000 + 3000, "back on the source's own time"


def test_missing_timestamps_advance_by_one_nominal_frame():
    t = clock()
    a = t.next(None, None)
    assert t.next(None, None) == a + 3000
