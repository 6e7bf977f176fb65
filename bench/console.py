"""Everything the suite shows on a terminal through rich: the console, progress bars, and the
lines that describe a cell. The only module that imports rich."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.config import CellConfig


def console() -> Console:
    return Console(highlight=False)


@contextlib.contextmanager
def reading_bar(label: str, *, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A transient bar over a long read; yields the `on_progress(done, total)` to feed it."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), disable=not enabled, transient=True) as bar:
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
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=out, disable=not enabled, transient=False) as bar:
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
