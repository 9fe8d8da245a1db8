"""Progress lines for logs: when they are written, how often, and what they say."""

from __future__ import annotations

import io

import pytest

from walkingnoise._progress import ProgressLines, duration_text, lines_wanted


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_are_wanted_only_by_default_and_only_off_a_terminal() -> None:
    assert lines_wanted(None, io.StringIO())
    assert not lines_wanted(None, _Terminal())
    assert not lines_wanted(True, io.StringIO())  # a bar was asked for
    assert not lines_wanted(False, io.StringIO())  # silence was asked for


def test_a_line_is_written_at_most_once_an_interval_with_the_time_left() -> None:
    clock, stream = _Clock(), io.StringIO()
    lines = ProgressLines("walk", 100, every=60, stream=stream, clock=clock)
    clock.now = 30
    lines.update(10, 0)
    assert stream.getvalue() == ""
    clock.now = 60
    lines.update(25, 1)
    clock.now = 90
    lines.update(30, 1)  # within 60 s of the last line
    assert stream.getvalue().splitlines() == [
        "walk: 25 of 100 experiments run (1 failed), 60 s, about 3 min left"
    ]
    clock.now = 125
    lines.close()
    assert (
        stream.getvalue().splitlines()[-1]
        == "walk: 30 of 100 experiments run (1 failed), 2 min, about 5 min left"
    )


def test_the_time_left_follows_the_share_of_the_work_done_where_it_is_known() -> None:
    # 25 of 100 experiments, but those took half of the work: as long again, not three times
    clock, stream = _Clock(), io.StringIO()
    lines = ProgressLines("walk", 100, every=60, stream=stream, clock=clock)
    clock.now = 60
    lines.update(25, 0, share=0.5)
    clock.now = 120
    lines.update(30, 0)  # not known any more: by the experiments
    assert stream.getvalue().splitlines() == [
        "walk: 25 of 100 experiments run (0 failed), 60 s, about 60 s left",
        "walk: 30 of 100 experiments run (0 failed), 2 min, about 5 min left",
    ]


@pytest.mark.parametrize(
    ("every", "expected"),
    [
        (60, []),  # all done within one interval: no line at all
        (1, ["walk: 4 of 4 experiments run (0 failed), 2 s"]),  # and the last one not twice
    ],
)
def test_a_run_ends_with_at_most_one_line_of_its_last_state(every: float, expected: list) -> None:
    clock, stream = _Clock(), io.StringIO()
    lines = ProgressLines("walk", 4, every=every, stream=stream, clock=clock)
    clock.now = 2
    lines.update(4, 0)
    lines.close()
    assert stream.getvalue().splitlines() == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "0 s"),
        (89, "89 s"),
        (90, "2 min"),
        (3600, "60 min"),
        (5400, "1.5 h"),
        (36000, "10.0 h"),
    ],
)
def test_durations_are_given_in_a_unit_that_suits_them(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text
