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


def print_split_sizes(out: Console, rows) -> None:
    """Each dataset's validation and test sizes and the primary metric's 95 % interval there
    (bench.split_sizes), before training; a warning where validation is too small to select on."""
    from bench.split_sizes import wide_warnings
    from bench.uncertainty import ASSUMED_SCORE

    if not rows:
        return
    grid = table(f"what the splits can resolve (95 % intervals at a score of {ASSUMED_SCORE:g})")
    for col in ("dataset", "metric", "val n", "val ±", "test n", "test ±", "test Δ"):
        grid.add_column(col, no_wrap=True)

    def pm(u) -> str:
        return "-" if u is None else f"{u.half_width:.3f}"

    for r in rows:
        resolves = "-" if r.test is None else f"{r.test.resolvable:.3f}"
        test_n = "sealed" if r.n_test is None else str(r.n_test)
        grid.add_row(r.dataset, r.metric, str(r.n_val), pm(r.val), test_n, pm(r.test), resolves)
    out.print(grid)
    out.print(
        "test Δ: the smallest difference between two methods' scores this test split tells "
        "apart (unpaired, 5 %)",
        markup=False,
    )
    for line in wide_warnings(rows):
        out.print(f"[yellow]warning[/] {line}")


def print_summary(out: Console, records: list[dict], *, hide_times: bool = False) -> None:
    """The score tables of these records, one per block with the notes on its timings, and the
    demo notice where it applies; `hide_times`: blocks whose timings are not comparable show
    none."""
    from bench.demo import DEMO_NOTICE
    from bench.report import blocks, records_frame, summarize
    from bench.report.summary import UNRANKED

    df = records_frame(records)
    if df.empty:
        return
    for title, table_df, notes in blocks(summarize(df), hide_times=hide_times):
        # 80 columns hold the scores and costs; the selection goes on a line of its own
        out.print(
            frame_table(title, table_df.drop(columns=list(UNRANKED)), left=("method", "runs"))
        )
        kept = ", ".join(f"{r.method} {r.gap} at {r.epoch}" for r in table_df.itertuples())
        out.print(f"validation minus test score, at the epoch kept: {kept}", markup=False)
        for note in notes:
            out.print(note, markup=False)
    if df["demo"].any():
        out.print(f"[bold yellow]{DEMO_NOTICE}[/]")
