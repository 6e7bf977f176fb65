"""`bench run` and `bench tune`: plan the grid from the options, run it here or through a
launcher, print the summary, and exit with a status that says whether the grid is whole."""

from __future__ import annotations

from pathlib import Path

import typer

import bench.cli.options as o
from bench.cli.common import checked_request, fail, parse_grid, stop_when_unsaved
from bench.cli.render import (
    print_grid,
    print_protocol_settings,
    print_split_sizes,
    print_summary,
)
from bench.cli.tune import run_search, tune_request
from bench.console import console

DEFAULT_METHODS = "core"


def run(
    ctx: typer.Context,
    config: o.Config = None,
    methods: o.Methods = DEFAULT_METHODS,
    datasets: o.Datasets = "demo",
    seeds: o.Seeds = "0",
    shots: o.Shots = None,
    split_seeds: o.SplitSeeds = None,
    augment: o.Augment = "rrc-flip",
    backbone: o.Backbone = "demo-vit",
    weights: o.Weights = None,
    no_pretrained: o.NoPretrained = False,
    epochs: o.Epochs = None,
    batch_size: o.BatchSize = 32,
    lr: o.Lr = None,
    img_size: o.ImgSize = None,
    device: o.Device = "auto",
    precision: o.Precision = "auto",
    compile_: o.Compile = False,
    set_: o.Set = None,
    results: o.ResultsOut = Path("results"),
    data_root: o.DataRoot = None,
    warmup_epochs: o.WarmupEpochs = 1.0,
    grad_clip: o.GradClip = 1.0,
    select: o.Select = "best",
    force: o.Force = False,
    oom_retry: o.OomRetry = False,
    allow_failures: o.AllowFailures = False,
    dry_run: o.DryRun = False,
    json_: o.JsonPlan = False,
    progress: o.Progress = True,
    artefacts: o.Artefacts = True,
    tracker: o.Tracker = "none",
    tracker_dir: o.TrackerDir = None,
    protocol: o.Protocol = None,
    launcher: o.Launcher = "local",
    gpus: o.Gpus = None,
    partition: o.Partition = None,
    time_: o.Time = None,
    gpus_per_job: o.GpusPerJob = None,
    max_concurrent: o.MaxConcurrent = None,
    slurm_config: o.SlurmConfig = None,
    slurm_cluster: o.SlurmCluster = None,
    wait: o.Wait = False,
    tune: o.Tune = False,
    budget: o.Budget = None,
    tune_seed: o.TuneSeed = None,
    scheduler: o.Scheduler = None,
    eta: o.Eta = None,
    space: o.Space = None,
) -> None:
    """Train and measure every (dataset x shots x split seed x method x seed) cell and write one
    record per cell."""
    from bench.errors import UserError

    out = console()
    tune = tune or ctx.info_name == "tune"
    progress = progress and not json_  # stdout holds the JSON document alone
    paper = None  # the --protocol, once read
    try:
        if json_ and not dry_run:
            raise UserError("--json prints the plan: add --dry-run (or see `bench status --json`)")
        from bench.device_options import check_device_options
        from bench.launchers import launch_options
        from bench.records import check_results_folder

        launch = launch_options(
            launcher, device=device, gpus=gpus, partition=partition, time_min=time_,
            gpus_per_job=gpus_per_job, max_concurrent=max_concurrent, slurm_config=slurm_config,
            slurm_cluster=slurm_cluster, wait=wait,
        )  # fmt: skip
        if launch.runs_here:  # --gpus runs the cells on those CUDA GPUs
            check_device_options("cuda" if launch.gpus else device, precision)
        check_results_folder(results, write=not dry_run and launch.kind == "local")
        grid = parse_grid(
            methods=methods, datasets=datasets, seeds=seeds, shots=shots,
            split_seeds=split_seeds, set_=set_,
        )  # fmt: skip
        from bench.claims import stale_after_s
        from bench.trackers import parse_trackers

        stale_claim_s = stale_after_s()  # a bad $MEDPEFT_STALE_CLAIM_HOURS fails here
        tune_req = tune_request(tune, budget, tune_seed, space, scheduler, eta)
        # an unknown tracker or a missing package fails here, on one line
        trackers = parse_trackers(tracker, tracker_dir=tracker_dir)
        # everything so far is torch-free; a typo in the grid fails here too, before the imports
        req, paper = checked_request(
            ctx, grid, protocol, no_pretrained=no_pretrained,
            data=not dry_run and launch.kind == "local", augment=augment, backbone=backbone,
            weights=weights, epochs=epochs, batch_size=batch_size, lr=lr, img_size=img_size,
            device=device, precision=precision, compile=compile_, results=results,
            data_root=data_root, warmup_epochs=warmup_epochs, grad_clip=grad_clip, select=select,
            force=force, oom_retry=oom_retry, artefacts=artefacts, stale_claim_s=stale_claim_s,
            tune=tune_req, trackers=trackers, tracker_dir=tracker_dir,
        )  # fmt: skip
        from bench.grid import plan

        search = None
        if launch.kind != "local" and not dry_run and req.tune is not None:
            from bench.launchers.stages import launched_search

            # checked whole here; the stages are launched by run_search
            the_plan, req, search = launched_search(req, launch, progress=progress)
        elif launch.kind != "local" and not dry_run:
            from bench.launchers import launch as run_launcher

            launched = run_launcher(req, launch, console=out, progress=progress)
        else:
            the_plan = plan(req, dry_run=dry_run, progress=progress)
            req = the_plan.request
            if req.tune is not None:
                from bench.tuning_plan import prepare

                search = prepare(the_plan, req)  # every space and trial checked before training
    except UserError as exc:
        fail(str(exc))
    if launch.kind != "local" and not dry_run and search is None:
        _launch_summary(out, launched, launch, results)
        _exit_on_failures(out, launched.records, allow_failures)
        return
    if json_:
        from bench.cli.json_out import emit, plan_json, search_json

        emit(search_json(the_plan, req, search) if search else plan_json(the_plan, results, paper))
        return
    if search is not None:
        with stop_when_unsaved():
            records = run_search(
                out, the_plan, req, search, dry_run=dry_run, progress=progress, launch=launch
            )
        _exit_on_failures(out, records, allow_failures)
        return
    if dry_run:
        _print_dry_run(out, the_plan, results)
        if paper is not None:
            print_protocol_settings(out, paper)
        return
    for note in the_plan.notes:
        out.print(f"[cyan]note[/] {note}")
    from bench.split_sizes import split_rows

    print_split_sizes(out, split_rows(the_plan.datasets))
    from bench.console import grid_progress
    from bench.execute import run_grid

    with stop_when_unsaved(), grid_progress(out, enabled=progress) as events:
        outcome = run_grid(the_plan, req, events=events)
    if not outcome.interrupted:  # after Ctrl-C, say how to continue and stop, nothing more
        print_summary(out, outcome.records)
    busy = f", {outcome.busy} running elsewhere" if outcome.busy else ""
    out.print(
        f"{outcome.ran} cell(s) run, {outcome.skipped} already done (--force reruns them){busy}; "
        f"records in {results}/"
    )
    if outcome.interrupted:
        out.print(
            "[yellow]interrupted[/]: finished cells are saved; run the same command again to continue"
        )
        raise typer.Exit(130)
    _exit_on_failures(out, outcome.records, allow_failures)


def _print_dry_run(out, the_plan, results: Path) -> None:
    """The planned grid, its notes, and how much training it asks for."""
    from bench.grid import training_images

    print_grid(out, the_plan, results)
    for note in the_plan.notes:
        out.print(f"[cyan]note[/] {note}")
    from bench.catalog import data_root, get_card
    from bench.split_sizes import dry_run_rows

    req = the_plan.request
    rows, unknown = dry_run_rows([get_card(n) for n in req.datasets], data_root(req.data_root))
    print_split_sizes(out, rows)
    if unknown:
        out.print(
            f"[cyan]note[/] what the splits of {', '.join(unknown)} resolve is said once "
            "`bench run` has read them"
        )
    images, unknown = training_images(the_plan.cells, the_plan.datasets)
    out.print(
        f"compute: {len(the_plan.cells)} cell(s), {images:,} training images passed"
        + (f" (+ {unknown} cell(s) whose training size is unknown until the data is read)"
           if unknown else "")
        + "; `bench profile` measures img/s on your GPU to turn this into hours"
    )  # fmt: skip


def _exit_on_failures(out, records: list[dict], allow_failures: bool) -> None:
    """Exit 1 when a cell of the grid has a failed, oom or diverged record (from this run or an
    earlier one), so Slurm dependencies, CI and workflow engines see that the grid is not whole;
    --allow-failures exits 0."""
    from collections import Counter

    from bench.records import FAILURES

    bad = Counter(r.get("status") for r in records if r.get("status") in FAILURES)
    if not bad:
        return
    counts = ", ".join(f"{n} {status}" for status, n in bad.items())
    if allow_failures:
        out.print(f"[yellow]{counts}[/] cell(s); exit status 0 (--allow-failures)")
        return
    out.print(f"[red]{counts}[/] cell(s): exit status 1 (--allow-failures exits 0)")
    raise typer.Exit(1)


def _launch_summary(out, outcome, launch, results: Path) -> None:
    """The end of a launched grid: the summary, counts, and an exit status that says whether
    every cell got its record."""
    if launch.kind == "slurm" and not launch.wait:
        return  # submitted: nothing has run yet
    if not outcome.interrupted:
        print_summary(out, outcome.records)
    crashed = f", {outcome.crashed} without a record (rerun to retry)" if outcome.crashed else ""
    busy = f", {outcome.busy} running elsewhere" if outcome.busy else ""
    out.print(
        f"{outcome.ran} cell(s) run, {outcome.skipped} already done{crashed}{busy}; records in "
        f"{results}/"
    )
    if outcome.interrupted:
        out.print("[yellow]interrupted[/]: run the same command again to continue")
        raise typer.Exit(130)
    if outcome.crashed:
        raise typer.Exit(1)
