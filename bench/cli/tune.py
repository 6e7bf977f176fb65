"""`bench tune` (and `bench run --tune`): the search request from its options, and what the
search prints while it selects each method's configuration and runs it at every seed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from bench.cli.render import print_grid, print_summary
from bench.console import Console

if TYPE_CHECKING:  # imported when a command runs, so `bench --help` stays instant
    from bench.tuning_request import TuneRequest


def tune_request(
    tune: bool,
    budget: int | None,
    seed: int | None,
    space: list[str] | None,
    scheduler: str | None = None,
    eta: int | None = None,
) -> TuneRequest | None:
    """The TuneRequest of --tune (or `bench tune`), None without it; the search options given
    without --tune are an error rather than silently ignored."""
    from bench.config import parse_sets
    from bench.errors import UserError
    from bench.tuning_request import DEFAULT_BUDGET, TuneRequest

    options = {"--budget": budget, "--tune-seed": seed, "--space": space,
               "--scheduler": scheduler, "--eta": eta}  # fmt: skip
    if not tune:
        given = [name for name, value in options.items() if value is not None]
        if given:
            raise UserError(
                f"{', '.join(given)} configure the search: add --tune (or use `bench tune`)"
            )
        return None
    if eta is not None and scheduler != "halving":
        raise UserError("--eta goes with --scheduler halving")
    # TuneRequest checks the values themselves
    return TuneRequest(
        budget=DEFAULT_BUDGET if budget is None else budget,
        seed=seed or 0,
        spaces=parse_sets(space or []),
        scheduler=scheduler or "none",
        eta=3 if eta is None else eta,
    )


def run_search(
    out: Console, the_plan, req, search, *, dry_run: bool, progress: bool, launch=None
) -> list[dict]:
    """Show the search (dry run) or run it, then the selected configurations; returns the
    records of both. With a `launch` other than local, each stage runs through that launcher
    (bench.launchers.stages) and the selection between stages runs here."""
    from bench.tuning import run_tuning
    from bench.tuning_select import TIE_RULE

    tune, groups = req.tune, search.groups
    for g in groups:
        out.print(
            f"[cyan]search[/] {g.label}: {len(g.trials)} of {g.space.size} configuration(s) "
            f"({g.mode}), budget {tune.budget}, tune seed {tune.seed}; "
            + ", ".join(f"{k} {list(v)}" for k, v in g.space.axes.items())
            + (f"; lr x batch/{g.space.lr_rule.reference_batch}" if g.space.lr_rule else "")
            + (
                "; halving: " + " -> ".join(f"{n} x {e} epoch(s)" for e, n in g.rungs)
                if len(g.rungs) > 1
                else ""
            )
        )
    if dry_run:
        print_grid(out, search.trials, req.results)
        out.print(
            f"then each group's best trial on validation ({TIE_RULE}) runs at seeds "
            f"{', '.join(map(str, req.seeds))}: {len(groups) * len(req.seeds)} cell(s)"
        )
        return []
    for note in dict.fromkeys(the_plan.notes + search.notes):
        out.print(f"[cyan]note[/] {note}")
    stages = None
    if launch is not None and launch.kind != "local":
        from bench.launchers.stages import LaunchedStages

        stages = LaunchedStages(req, launch, out)
    outcome = run_tuning(the_plan, req, console=out, progress=progress, search=search, stage=stages)
    trials = outcome.trials
    crashed = stages.crashed if stages is not None else 0
    out.print(
        f"search: {trials.ran} trial(s) run, {trials.skipped} already done"
        + (f", {trials.busy} running elsewhere" if trials.busy else "")
        + (f", {crashed} launched cell(s) without a record (rerun to retry)" if crashed else "")
    )
    if outcome.interrupted:
        out.print(
            "[yellow]interrupted[/]: finished trials and cells are saved; run the same command "
            "again to continue"
        )
        raise typer.Exit(130)
    for label in outcome.unscored:
        out.print(f"[red]no score[/] {label}: every trial diverged or ran out of memory")
    if stages is not None and stages.submitted:
        _print_submitted(out, stages.submitted, outcome.waiting)
        if outcome.unscored:
            raise typer.Exit(1)
        return trials.records + outcome.finals.records
    for label in outcome.waiting:
        out.print(
            f"[yellow]waiting[/] {label}: some trials failed or run elsewhere; run again to "
            "finish the search"
        )
    finals = outcome.finals
    print_summary(out, finals.records)
    out.print(
        f"{finals.ran} selected cell(s) run, {finals.skipped} already done; records in "
        f"{req.results}/"
    )
    if outcome.waiting or outcome.unscored or crashed:  # crashed: a final without a record
        raise typer.Exit(1)
    return trials.records + finals.records


def _print_submitted(out: Console, submitted: list, waiting: list[str]) -> None:
    """What a Slurm search without --wait submitted, and what running it again will do."""
    from bench.launchers.stages import stage_text

    for cells in submitted:
        out.print(f"[cyan]submitted[/] {stage_text(cells)}")
    for label in waiting:
        out.print(f"[yellow]waiting[/] {label}: its trials have no records yet")
    if any(c.role == "trial" for cells in submitted for c in cells):
        then = "selects from the trial records and submits the next rung or the finals"
    else:
        then = "submits nothing more and prints the summary"
    out.print(
        "next: once these jobs have finished (`bench status` shows them), run the same command "
        f"again: it skips what is done and {then}"
    )
