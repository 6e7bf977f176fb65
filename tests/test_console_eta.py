"""The grid's progress bar gives the time left for the whole grid, from the pace so far."""

from __future__ import annotations

from rich.progress import Progress

from bench.console import PACE_WINDOW_S, EtaColumn


def test_the_eta_is_blank_until_there_is_a_pace_then_counts_down() -> None:
    now = [0.0]
    column = EtaColumn()
    bar = Progress(column, get_time=lambda: now[0], disable=True,
                   speed_estimate_period=PACE_WINDOW_S)  # fmt: skip
    unknown = bar.add_task("cell", total=None)
    grid = bar.add_task("grid", total=4)
    assert column.render(bar.tasks[unknown]).plain == ""
    assert column.render(bar.tasks[grid]).plain == ""  # nothing done yet
    for _ in range(2):  # two cells of 60 s each
        now[0] += 60.0
        bar.advance(grid)
    assert column.render(bar.tasks[grid]).plain == "eta 0:02:00"  # two more at that pace
    bar.update(grid, completed=4)
    assert column.render(bar.tasks[grid]).plain == ""  # finished
