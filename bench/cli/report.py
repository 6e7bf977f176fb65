"""`bench report`: summarise the records on the terminal and render the report (HTML, tables,
statistics, figures, and a paper's table) into a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import bench.cli.options as o
from bench.cli.common import fail
from bench.cli.complete import complete_datasets, complete_methods
from bench.cli.render import print_summary
from bench.console import console, frame_table


def report(
    results: o.ResultsIn = Path("results"),
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the rendered report [default: reports/, or for a report filtered by "
            "--datasets/--methods/--backbone/--where a folder of its own in reports/ named by "
            "the filters]."
        ),
    ] = None,
    datasets: Annotated[
        str | None,
        typer.Option(
            help="Only these datasets (comma-separated).", autocompletion=complete_datasets
        ),
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(help="Only these methods (comma-separated).", autocompletion=complete_methods),
    ] = None,
    backbone: Annotated[
        str | None, typer.Option(help="Only these backbones (comma-separated).")
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            metavar="<key=value>",
            help="Only records whose config has KEY=VALUE (or KEY!=VALUE; KEY=a,b for any of "
            "several; dotted keys reach hyperparameters: hparams.rank=8; shots=full). Repeatable.",
        ),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(help="Method the paired tests compare against [default: full, else linear]."),
    ] = None,
    plots: Annotated[bool, typer.Option(help="Draw the figures (PNG and PDF).")] = True,
    hide_incomparable_times: Annotated[
        bool,
        typer.Option(
            "--hide-incomparable-times",
            help="Leave out the time columns (train s, img/s, ms/step) of a table whose runs "
            "were timed on different machines, with different torch thread counts, or while "
            "other processes kept the machine busy; the note under the table says why.",
        ),
    ] = False,
    paper_regime: Annotated[
        str,
        typer.Option(
            help="--paper: 'fixed' (the protocol's pinned or default hyperparameters) or "
            "'tuned' (the configurations `bench run --protocol NAME --tune` selected)."
        ),
    ] = "fixed",
    paper: Annotated[
        str | None,
        typer.Option(
            help="Also render a paper's table (`bench list protocols`) with its published numbers "
            "beside the reproduced ones."
        ),
    ] = None,
) -> None:
    """Summarise the records: tables on the terminal; in --out, index.html, score and efficiency
    tables (markdown, LaTeX, CSV), statistics and figures."""
    from bench.config import parse_name_list
    from bench.errors import UserError
    from bench.records import load_records
    from bench.report import (
        choose_baseline,
        is_profile,
        parse_where,
        profile_frame,
        profile_tables,
        records_frame,
        select_records,
        write_paper_table,
        write_report,
    )

    term = console()
    filtered = out is None and any((datasets, methods, backbone, where))
    if out is None:
        out = REPORTS / filter_folder(datasets, methods, backbone, where) if filtered else REPORTS
    if not results.is_dir():
        fail(f"no results folder {results}; run `bench run` first or pass --results")
    if out.exists() and not out.is_dir():
        fail(f"--out {out} exists and is not a folder; name a folder for the report")
    loaded = load_records(results)
    for path, what in loaded.notes():
        term.print(f"[yellow]skipped[/] {path}: {what}", soft_wrap=True)
    try:
        _check_paper(paper, paper_regime)
        only_methods = parse_name_list(methods) if methods else None
        only_backbones = parse_name_list(backbone) if backbone else None
        grid_records = [r for r in loaded.records if not is_profile(r)]
        profiles = profile_frame(
            [r for r in loaded.records if is_profile(r)
             and (not only_methods or r["profile"].get("method") in only_methods)
             and (not only_backbones or r["profile"].get("backbone") in only_backbones)]
        )  # fmt: skip
        chosen = select_records(
            grid_records,
            datasets=parse_name_list(datasets) if datasets else None,
            methods=only_methods,
            backbones=only_backbones,
            where=parse_where(where or []),
        )
        df = records_frame(chosen)
        base = choose_baseline(df, baseline)
    except UserError as exc:
        fail(str(exc))
    if grid_records and not chosen:
        term.print(
            f"[yellow]no record matches the filters[/] ({len(grid_records)} record(s) in "
            f"{results}); the report will be empty"
        )
    print_summary(term, chosen, hide_times=hide_incomparable_times)
    _print_gaps(term, df)
    if len(profiles):
        for title, frame, notes in profile_tables(profiles, hide_times=hide_incomparable_times):
            term.print(frame_table(f"profile: {title}", frame, left=("method",)))
            for note in notes:
                term.print(note, markup=False)
    try:
        written, sections = [], []
        if paper is not None:
            # The paper's table reads every record: the protocol picks its own cells.
            written, section = write_paper_table(
                paper, records_frame(loaded.records), out, paper_regime
            )
            sections.append(section)
        written += write_report(
            df, out, plots=plots, baseline=base, profiles=profiles, records=chosen,
            hide_times=hide_incomparable_times, sections=sections,
        )  # fmt: skip
    except OSError as exc:
        fail(f"cannot write the report in {out}: {exc.strerror or exc}; choose another --out")
    if filtered:
        term.print(f"filtered report: written to its own folder {out}/ (--out chooses another)")
    term.print(
        f"wrote {len(written)} file(s) in {out}/ ({len(df)} record(s)): open {out / 'index.html'}"
    )
    for path in written:
        term.print(f"  {path}")


REPORTS = Path("reports")


def filter_folder(
    datasets: str | None, methods: str | None, backbone: str | None, where: list[str] | None
) -> str:
    """The folder name, under reports/, of a report filtered this way: the filters in words
    ("datasets-derm-where-hparams-rank-not-4"): filters that differ in more than punctuation
    get folders of their own, and the unfiltered report is never overwritten."""
    from bench.report.names import slug

    words = [
        f"{name} {value}"
        for name, value in (("datasets", datasets), ("methods", methods), ("backbone", backbone))
        if value
    ]
    words += [f"where {w.replace('!=', ' not ')}" for w in where or []]
    return slug(" ".join(words))


def _check_paper(paper: str | None, paper_regime: str) -> None:
    """An unknown --paper or --paper-regime (even one given without --paper) fails before
    anything is written."""
    from bench.errors import UserError
    from bench.protocols import get_protocol
    from bench.report import PAPER_REGIMES

    if paper_regime not in PAPER_REGIMES:
        raise UserError(
            f"--paper-regime must be one of {', '.join(PAPER_REGIMES)}, not {paper_regime!r}"
        )
    if paper is not None:
        get_protocol(paper)


def _print_gaps(out, df) -> None:
    """Unfinished and missing cells under the tables, so a partial grid never looks complete."""
    from bench.report.missing import lines, missing_in_grid

    if df.empty:
        return
    bad = df[df["status"] != "ok"]
    for r in bad.itertuples():
        out.print(f"[red]{r.status}[/] {r.run_id}: {r.error}")
    missing = lines(missing_in_grid(df))
    if missing:
        out.print("[yellow]missing cells[/] (no record; run the same grid again to fill them):")
        for line in missing[:20]:
            out.print(f"  {line}")
        if len(missing) > 20:
            out.print(f"  ... and {len(missing) - 20} more in summary.md")
