"""What `bench run`, `bench tune` and `bench report` print about a grid: its cells before a run,
the score summary after it."""

from __future__ import annotations

from pathlib import Path

from bench.console import Console, as_written, frame_table, table


def print_grid(out: Console, the_plan, results: Path) -> None:
    """A planned grid, one row per cell with whether it is done, then its backbone and device."""
    from bench.records import finished

    grid = table(f"{len(the_plan.cells)} cell(s)")
    # run ids whole, never cut with an ellipsis: they are what a user copies (or use --json)
    widest = max((len(c.run_id) for c in the_plan.cells), default=6)
    grid.add_column("run id", no_wrap=True, min_width=widest)
    for col in ("method", "dataset", "seed", "epochs", "lr", "img", "hyperparameters"):
        grid.add_column(col)
    grid.add_column("state", no_wrap=True, min_width=len("to run"))
    for c in the_plan.cells:
        state = "done" if finished(results, c.run_id) else "to run"
        hp = ", ".join(f"{k}={v}" for k, v in c.hparams.items()) or "-"
        grid.add_row(
            c.run_id,
            c.method,
            c.dataset + (f" {c.shots}-shot x{c.split_seed}" if c.shots is not None else ""),
            str(c.seed),
            str(c.epochs),
            f"{c.lr:g}",
            str(c.img_size),
            hp,
            state,
        )
    out.print(grid)
    src = the_plan.source
    out.print(
        f"backbone {src.name} ({'pretrained' if src.pretrained else 'random init'}), "
        f"device {the_plan.cells[0].device}"
    )


def print_protocol_settings(out: Console, protocol) -> None:
    """A paper protocol's settings beside `bench run`'s defaults, then what it cannot match."""
    from bench.protocol_settings import settings_rows

    grid = table(f"protocol {protocol.name}: the paper's settings beside bench run's defaults")
    for col in ("setting", "this protocol (paper)", "bench run default", "source"):
        grid.add_column(col, overflow="fold")
    for row in settings_rows(protocol):
        style = "" if row.differs else "dim"
        cells = (row.setting, row.protocol, row.suite, row.source)
        grid.add_row(*map(as_written, cells), style=style)
    out.print(grid)
    if protocol.differences:
        out.print("[yellow]where this protocol differs from the paper[/]:")
        for line in protocol.differences:
            out.print(f"  - {as_written(line)}")


def print_summary(out: Console, records: list[dict], *, hide_times: bool = False) -> None:
    """The score tables of these records, one per block with the notes on its timings, and the
    demo notice where it applies; `hide_times`: blocks whose timings are not comparable show
    none."""
    from bench.demo import DEMO_NOTICE
    from bench.report import blocks, records_frame, summarize

    df = records_frame(records)
    if df.empty:
        return
    for title, table_df, notes in blocks(summarize(df), hide_times=hide_times):
        out.print(frame_table(title, table_df, left=("method", "runs")))
        for note in notes:
            out.print(note, markup=False)
    if df["demo"].any():
        out.print(f"[bold yellow]{DEMO_NOTICE}[/]")
