"""Terminal output: the console, table builders and progress bars; the one module that
imports rich, so how the suite draws stays in one place."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from bench.config import CellConfig


def console(*, stderr: bool = False) -> Console:
    """The console every command prints to (no automatic highlighting of numbers and paths)."""
    return Console(highlight=False, stderr=stderr)


def as_written(text: str) -> str:
    """`text` with rich markup escaped, so bracketed words such as '[default]' print as written."""
    return escape(text)


def table(title: str | None = None, *, compact: bool = False, show_header: bool = True) -> Table:
    """An empty table; `compact`: light borders and shared padding, to fit 80 columns."""
    if compact:
        return Table(title=title, box=box.SIMPLE, collapse_padding=True, pad_edge=False)
    return Table(title=title, show_header=show_header)


def wrapping_table(title: str, fixed: tuple[str, ...], wrapping: tuple[str, ...]) -> Table:
    """Names never wrap (they are what users type); descriptions take the remaining width."""
    out = Table(title=title)
    for col in fixed:
        out.add_column(col, no_wrap=True)
    for col in wrapping:
        out.add_column(col, overflow="fold", ratio=1)
    return out


def frame_table(title: str, frame, left: Collection[str]) -> Table:
    """A pandas DataFrame as a table: the `left` columns left-aligned, the rest (numbers) right."""
    out = Table(title=title)
    for col in frame.columns:
        out.add_column(str(col), justify="left" if col in left else "right")
    for row in frame.itertuples(index=False):
        out.add_row(*(str(v) for v in row))
    return out


def progress_bar(
    *,
    console: Console | None = None,
    show: bool = True,
    transient: bool = True,
    elapsed: bool = True,
    info: bool = False,
    label: str = "{task.description}",
    counter: str | None = None,
    eta: bool = False,
) -> Progress:
    """A progress bar: label, bar, done/total (or the `counter` template), the elapsed time when
    `elapsed`, the time left when `eta`, and a task's `info` field when `info`; `show=False`
    draws nothing."""
    columns = [
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn() if counter is None else TextColumn(counter),
    ]
    if elapsed:
        columns.append(TimeElapsedColumn())
    if eta:
        columns.append(EtaColumn())
    # rich takes the pace from the last 30 s by default, so a grid whose cells take longer would
    # never get an estimate: the pace of the whole last hour instead
    pace = {"speed_estimate_period": PACE_WINDOW_S} if eta else {}
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    return Progress(*columns, console=console, disable=not show, transient=transient, **pace)


PACE_WINDOW_S = 3600.0


class EtaColumn(TimeRemainingColumn):
    """rich's time-left estimate (from the recent pace), as "eta 0:03:10"; blank while a task's
    total is unknown or nothing has finished yet to take a pace from."""

    def render(self, task: Task) -> Text:
        if task.total is None or task.finished or task.time_remaining is None:
            return Text("")
        return Text("eta ") + super().render(task)


@contextlib.contextmanager
def reading_bar(label: str, *, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A transient bar over a long read; yields the `on_progress(done, total)` to feed it."""
    with progress_bar(show=enabled) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


class GridProgress:
    """The grid's events (bench.execute.GridEvents) as a bar over the grid, a bar per running
    cell, and one line per cell that ends."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task: Any = None
        self.cells: dict[str, Any] = {}

    def grid_started(self, todo: int, skipped: int) -> None:
        self.task = self.bar.add_task("grid", total=todo, info=f"{skipped} already done")

    def cell_started(self, cell: CellConfig) -> None:
        label = cell_label(cell.to_dict())
        self.cells[cell.run_id] = self.bar.add_task(f"  {label}", total=None, info="")

    def cell_progress(self, cell: CellConfig, done: int, total: int, info: str) -> None:
        self.bar.update(self.cells[cell.run_id], completed=done, total=total, info=info)

    def cell_ended(self, cell: CellConfig) -> None:
        self.bar.remove_task(self.cells.pop(cell.run_id))

    def cell_saved(self, record: dict[str, Any]) -> None:
        self.bar.advance(self.task)
        self.bar.console.print(cell_line(record))

    def cell_left(self, cell: CellConfig, why: str, record: dict[str, Any] | None) -> None:
        label = cell_label(cell.to_dict())
        if why == "busy":
            self.bar.console.print(f"[yellow]running elsewhere[/] {label}")
        elif record is not None:
            self.bar.console.print(f"[dim]{record.get('status')} elsewhere[/] {label}")
        else:
            self.bar.console.print(
                f"[yellow]skipped[/] {label}: a file that is not a record appeared where its "
                "record goes (left untouched)"
            )
        self.bar.advance(self.task)


@contextlib.contextmanager
def grid_progress(out: Console | None, *, enabled: bool) -> Iterator[GridProgress]:
    """GridEvents shown on `out` for the duration of the block (nothing shown when disabled)."""
    with progress_bar(console=out, show=enabled, transient=False, info=True, eta=True) as bar:
        yield GridProgress(bar)


def cell_label(cfg: dict[str, Any]) -> str:
    shots = f" {cfg['shots']}-shot x{cfg['split_seed']}" if cfg.get("shots") else ""
    return f"{cfg['dataset']}{shots}/{cfg['method']}/seed {cfg['seed']}"


def cell_line(record: dict[str, Any]) -> str:
    cfg = record["config"]
    place = cell_label(cfg)
    secs = record.get("cost", {}).get("wall_s", 0.0)
    if record["status"] == "ok":
        m = record["metrics"]
        return f"[green]ok[/] {place}: test {m['primary_metric']} {m['primary']:.4f} ({secs:.1f} s)"
    if record["status"] == "trial":
        trial = record["trial"]
        searched = (record.get("hyperparameters") or {}).get("searched") or {}
        hp = f"lr {cfg['lr']:.3g} wd {cfg['weight_decay']:g}" + "".join(
            f" {k} {v}" for k, v in searched.items() if k not in ("lr", "weight_decay")
        )
        if trial["outcome"] != "ok" or trial.get("val_primary") is None:
            return f"[yellow]trial[/] {place} ({hp}): {trial['outcome']} ({secs:.1f} s)"
        return (
            f"[cyan]trial[/] {place} ({hp}): val {trial['metric']} {trial['val_primary']:.4f} "
            f"({secs:.1f} s)"
        )
    return f"[red]{record['status']}[/] {place}: {record['error']}"
