"""The `bench` command line: run, list, report. Heavy imports happen inside commands so
`bench --help` is instant."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from bench.cli_common import console as _console
from bench.cli_common import fail as _fail
from bench.cli_common import grid_request, stop_when_unsaved

app = typer.Typer(
    name="bench",
    help="Benchmark parameter-efficient fine-tuning of Vision Transformers on medical images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEFAULT_METHODS = "core"
# torch numbers GPUs fastest-first by default, NVML by PCI bus: make them agree before any CUDA
# call, so the NVML memory and busy-process figures are about the GPU torch uses.
os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")

from bench.cli_data import data_app  # noqa: E402  (light: typer only)

app.add_typer(data_app, name="data")

from bench.cli_profile import profile  # noqa: E402  (light: typer only)
from bench.cli_status import status  # noqa: E402  (light: typer only)

app.command()(profile)
app.command()(status)


# Options that define a grid; --protocol sets them all, so they cannot be given beside it.
GRID_OPTIONS = ("methods", "datasets", "seeds", "backbone", "epochs", "batch_size", "lr",
                "img_size", "shots", "split_seeds", "augment")  # fmt: skip


@app.command()
def run(
    ctx: typer.Context,
    methods: Annotated[
        str,
        typer.Option(
            help="Comma-separated methods; 'core' = the card's six that exist, 'all' = every one."
        ),
    ] = DEFAULT_METHODS,
    datasets: Annotated[
        str, typer.Option(help="Comma-separated datasets from the catalog (`bench list`).")
    ] = "demo",
    seeds: Annotated[str, typer.Option(help="Training seeds: '0,1,2' or '0-4'.")] = "0",
    shots: Annotated[
        str | None,
        typer.Option(
            help="Few-shot: K images per class (per label for multi-label) from train, e.g. "
            "1,5,10. Default: the full training split."
        ),
    ] = None,
    split_seeds: Annotated[
        str | None,
        typer.Option(
            help="Which few-shot samples, apart from training seeds: '0-4' (default 0). Cards "
            "with published split files read exp<seed+1>."
        ),
    ] = None,
    augment: Annotated[
        str,
        typer.Option(help="Training augmentation preset (`bench list augmentations`)."),
    ] = "rrc-flip",
    backbone: Annotated[
        str,
        typer.Option(help="A timm ViT name, or 'demo-vit' (the suite-pretrained demo backbone)."),
    ] = "demo-vit",
    weights: Annotated[
        Path | None,
        typer.Option(
            help="Local pretrained weights (safetensors or timm state dict) instead of the hub."
        ),
    ] = None,
    no_pretrained: Annotated[
        bool,
        typer.Option("--no-pretrained", help="Random init: the 'does pretraining help' baseline."),
    ] = False,
    epochs: Annotated[
        int | None, typer.Option(help="Epochs per cell (default: the dataset card's).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size for training and evaluation.")] = 32,
    lr: Annotated[
        float | None,
        typer.Option(help="Learning rate for every method (default: each method's own)."),
    ] = None,
    img_size: Annotated[
        int | None,
        typer.Option(
            help="Input size for every method (default: the backbone's native size; FPT+/FPT "
            "run their frozen model at high resolution by their own rule)."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[
        str, typer.Option(help="auto (bf16 autocast on GPU, fp32 on CPU), bf16 or fp32.")
    ] = "auto",
    compile_: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="torch.compile each model's forward; the compile time is recorded apart "
            "(cost.compile_s), not in the step time.",
        ),
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="A method hyperparameter, METHOD.KEY=VALUE (repeatable), e.g. linear.lr=0.01.",
        ),
    ] = None,
    results: Annotated[Path, typer.Option(help="Folder for the JSON records.")] = Path("results"),
    data_root: Annotated[
        Path | None,
        typer.Option(
            help="Where datasets live (default $MEDPEFT_DATA or ~/.local/share/medpeft-bench)."
        ),
    ] = None,
    warmup_epochs: Annotated[
        float, typer.Option(help="Linear warm-up length in epochs before the cosine decay.")
    ] = 1.0,
    grad_clip: Annotated[
        float, typer.Option(help="Gradient-norm clipping threshold (0 disables).")
    ] = 1.0,
    force: Annotated[
        bool, typer.Option("--force", help="Rerun cells that already have a finished record.")
    ] = False,
    oom_retry: Annotated[
        bool,
        typer.Option(
            "--oom-retry",
            help="Retry a cell that runs out of GPU memory at half the batch size, down to 1 "
            "(the record keeps the requested cell and says the batch size used); also retries "
            "oom records an earlier run left.",
        ),
    ] = False,
    allow_failures: Annotated[
        bool,
        typer.Option(
            "--allow-failures",
            help="Exit 0 even when cells failed, ran out of memory or diverged (by default "
            "such a grid exits 1; bad input exits 2, an interrupted run 130).",
        ),
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the grid and exit.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    protocol: Annotated[
        str | None,
        typer.Option(
            help="A paper's grid (`bench list protocols`): methods, datasets, shots, seeds, "
            "budget and backbone as the paper ran them; with --dry-run, also the data it needs."
        ),
    ] = None,
    launcher: Annotated[
        str,
        typer.Option(
            help="local: cells in this process; subprocess: each cell in a fresh process (one "
            "per GPU with --gpus); slurm: one Slurm job per cell through submitit."
        ),
    ] = "local",
    gpus: Annotated[
        str | None,
        typer.Option(help="subprocess launcher: GPUs to keep busy, one cell each, e.g. 0,1,2,3."),
    ] = None,
    partition: Annotated[str | None, typer.Option(help="slurm: the partition.")] = None,
    time_: Annotated[
        int | None, typer.Option("--time", help="slurm: time limit per job in minutes [60].")
    ] = None,
    gpus_per_job: Annotated[
        int | None, typer.Option(help="slurm: GPUs per job [1; 0 with --device cpu].")
    ] = None,
    max_concurrent: Annotated[
        int | None, typer.Option(help="slurm: most jobs of the array running at once.")
    ] = None,
    slurm_config: Annotated[
        Path | None,
        typer.Option(
            help="slurm: TOML with partition, time, gpus_per_job, max_concurrent, cluster "
            "(options given here win)."
        ),
    ] = None,
    slurm_cluster: Annotated[
        str | None,
        typer.Option(help="slurm: 'slurm' [default], or 'local' to run the jobs here (submitit)."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="slurm: wait for the jobs and print each outcome.")
    ] = False,
    tune: Annotated[
        bool,
        typer.Option(
            "--tune",
            help="Search each method's declared space first (what `bench tune` does): --budget "
            "trials per (dataset, shots, split, method) selected on validation, then the "
            "selected configuration at every seed.",
        ),
    ] = False,
    budget: Annotated[
        int | None,
        typer.Option(
            help="--tune: configurations tried per method and dataset, the same for every "
            "method [8]; the whole grid when the space is smaller."
        ),
    ] = None,
    tune_seed: Annotated[
        int | None,
        typer.Option(help="--tune: seeds the order of the search and trains its trials [0]."),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="--tune: 'none' (every trial trains all epochs) or 'halving' (successive "
            "halving: all --budget configurations train a short schedule, the best 1/--eta go on "
            "to --eta times the epochs, up to the full epochs) [none]."
        ),
    ] = None,
    eta: Annotated[
        int | None, typer.Option(help="--tune --scheduler halving: keep the best 1/eta [3].")
    ] = None,
    space: Annotated[
        list[str] | None,
        typer.Option(
            "--space",
            help="--tune: search these values instead of the declared grid, METHOD.KEY=a,b,c "
            "(repeatable), e.g. vpt.prompt_length=1,10; lr values are base values where the "
            "method declares a batch rule (`bench list spaces`). --set pins a key instead.",
        ),
    ] = None,
) -> None:
    """Train and measure every (dataset x shots x split seed x method x seed) cell and write one
    record per cell."""
    from bench.errors import UserError

    console = _console()
    tune = tune or ctx.info_name == "tune"
    try:
        from bench.launchers import launch_options

        launch = launch_options(
            launcher, device=device, gpus=gpus, partition=partition, time_min=time_,
            gpus_per_job=gpus_per_job, max_concurrent=max_concurrent, slurm_config=slurm_config,
            slurm_cluster=slurm_cluster, wait=wait,
        )  # fmt: skip
        req = grid_request(
            methods=methods, datasets=datasets, seeds=seeds, shots=shots,
            split_seeds=split_seeds, set_=set_, no_pretrained=no_pretrained, augment=augment,
            backbone=backbone, weights=weights, epochs=epochs, batch_size=batch_size, lr=lr,
            img_size=img_size, device=device, precision=precision, compile=compile_,
            results=results, data_root=data_root, warmup_epochs=warmup_epochs,
            grad_clip=grad_clip, force=force, oom_retry=oom_retry,
        )  # fmt: skip
        from bench.claims import stale_after_s

        req = req.replace(
            stale_claim_s=stale_after_s(),  # a bad $MEDPEFT_STALE_CLAIM_HOURS fails here
            tune=_tune_request(tune, budget, tune_seed, space, scheduler, eta),
        )
        if req.tune is not None and launch.kind != "local":
            raise UserError(
                f"--tune runs with --launcher local for now (the search must finish before the "
                f"selected configurations run); drop --launcher {launch.kind}"
            )
        if protocol is not None:
            from bench.protocols import apply_protocol, get_protocol

            given = [
                f"--{name.replace('_', '-')}"
                for name in GRID_OPTIONS
                # compared by name: typer may ship its own copy of click's enum
                if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"
            ]
            if given:
                raise UserError(
                    f"--protocol {protocol} sets the grid; drop {', '.join(given)} (or run "
                    "without --protocol)"
                )
            req = apply_protocol(get_protocol(protocol), req).replace(protocol=protocol)
        from bench.execute import run_grid
        from bench.grid import plan

        if launch.kind != "local" and not dry_run:
            from bench.launchers import launch as run_launcher

            launched = run_launcher(req, launch, console=console, progress=progress)
        else:
            the_plan = plan(req, dry_run=dry_run, progress=progress)
            req = the_plan.request
            search = None
            if req.tune is not None:
                from bench.tuning_plan import prepare

                search = prepare(the_plan, req)  # every space and trial checked before training
    except UserError as exc:
        _fail(str(exc))
    if launch.kind != "local" and not dry_run:
        _launch_summary(console, launched, launch, results)
        _exit_on_failures(console, launched.records, allow_failures)
        return
    if search is not None:
        with stop_when_unsaved():
            records = _tune(console, the_plan, req, search, dry_run=dry_run, progress=progress)
        _exit_on_failures(console, records, allow_failures)
        return
    if dry_run:
        _print_grid(console, the_plan, results)
        for note in the_plan.notes:
            console.print(f"[cyan]note[/] {note}")
        from bench.grid import training_images

        images, unknown = training_images(the_plan.cells, the_plan.datasets)
        console.print(
            f"compute: {len(the_plan.cells)} cell(s), {images:,} training images passed"
            + (f" (+ {unknown} cell(s) whose training size is unknown until the data is read)"
               if unknown else "")
            + "; `bench profile` measures img/s on your GPU to turn this into hours"
        )  # fmt: skip
        return
    for note in the_plan.notes:
        console.print(f"[cyan]note[/] {note}")
    with stop_when_unsaved():
        from bench.console import grid_progress

        with grid_progress(console, enabled=progress) as events:
            outcome = run_grid(the_plan, req, events=events)
    if not outcome.interrupted:  # after Ctrl-C, say how to continue and stop, nothing more
        _print_summary(console, outcome.records)
    busy = f", {outcome.busy} running elsewhere" if outcome.busy else ""
    console.print(
        f"{outcome.ran} cell(s) run, {outcome.skipped} already done (--force reruns them){busy}; "
        f"records in {results}/"
    )
    if outcome.interrupted:
        console.print(
            "[yellow]interrupted[/]: finished cells are saved; run the same command again to continue"
        )
        raise typer.Exit(130)
    _exit_on_failures(console, outcome.records, allow_failures)


def _exit_on_failures(console, records: list[dict], allow_failures: bool) -> None:
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
        console.print(f"[yellow]{counts}[/] cell(s); exit status 0 (--allow-failures)")
        return
    console.print(f"[red]{counts}[/] cell(s): exit status 1 (--allow-failures exits 0)")
    raise typer.Exit(1)


def _tune_request(
    tune: bool,
    budget: int | None,
    seed: int | None,
    space: list[str] | None,
    scheduler: str | None = None,
    eta: int | None = None,
):
    """The TuneRequest of --tune (or `bench tune`), None without it; the search options given
    without --tune are an error rather than silently ignored."""
    from bench.config import parse_sets
    from bench.errors import UserError
    from bench.tuning_plan import DEFAULT_BUDGET, TuneRequest

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


def _tune(console, the_plan, req, search, *, dry_run: bool, progress: bool) -> list[dict]:
    """`bench tune`: show the search (dry run) or run it, then the selected configurations;
    returns the records of both."""
    from bench.tuning import run_tuning
    from bench.tuning_select import TIE_RULE

    tune, groups = req.tune, search.groups
    for g in groups:
        console.print(
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
        _print_grid(console, search.trials, req.results)
        console.print(
            f"then each group's best trial on validation ({TIE_RULE}) runs at seeds "
            f"{', '.join(map(str, req.seeds))}: {len(groups) * len(req.seeds)} cell(s)"
        )
        return []
    for note in dict.fromkeys(the_plan.notes + search.notes):
        console.print(f"[cyan]note[/] {note}")
    outcome = run_tuning(the_plan, req, console=console, progress=progress, search=search)
    trials = outcome.trials
    console.print(
        f"search: {trials.ran} trial(s) run, {trials.skipped} already done"
        + (f", {trials.busy} running elsewhere" if trials.busy else "")
    )
    if outcome.interrupted:
        console.print(
            "[yellow]interrupted[/]: finished trials and cells are saved; run the same command "
            "again to continue"
        )
        raise typer.Exit(130)
    for label in outcome.waiting:
        console.print(
            f"[yellow]waiting[/] {label}: some trials failed or run elsewhere; run again to "
            "finish the search"
        )
    for label in outcome.unscored:
        console.print(f"[red]no score[/] {label}: every trial diverged or ran out of memory")
    finals = outcome.finals
    _print_summary(console, finals.records)
    console.print(
        f"{finals.ran} selected cell(s) run, {finals.skipped} already done; records in "
        f"{req.results}/"
    )
    if outcome.waiting or outcome.unscored:
        raise typer.Exit(1)
    return trials.records + finals.records


def _launch_summary(console, outcome, launch, results: Path) -> None:
    """The end of a launched grid: the summary, counts, and an exit status that says whether
    every cell got its record."""
    if launch.kind == "slurm" and not launch.wait:
        return  # submitted: nothing has run yet
    if not outcome.interrupted:
        _print_summary(console, outcome.records)
    crashed = f", {outcome.crashed} without a record (rerun to retry)" if outcome.crashed else ""
    busy = f", {outcome.busy} running elsewhere" if outcome.busy else ""
    console.print(
        f"{outcome.ran} cell(s) run, {outcome.skipped} already done{crashed}{busy}; records in "
        f"{results}/"
    )
    if outcome.interrupted:
        console.print("[yellow]interrupted[/]: run the same command again to continue")
        raise typer.Exit(130)
    if outcome.crashed:
        raise typer.Exit(1)


def _print_grid(console, the_plan, results: Path) -> None:
    from rich.table import Table

    from bench.records import finished

    table = Table(title=f"{len(the_plan.cells)} cell(s)")
    columns = ("run id", "method", "dataset", "seed", "epochs", "lr", "img", "hyperparameters")
    for col in (*columns, "state"):
        table.add_column(col)
    for c in the_plan.cells:
        state = "done" if finished(results, c.run_id) else "to run"
        hp = ", ".join(f"{k}={v}" for k, v in c.hparams.items()) or "-"
        table.add_row(
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
    console.print(table)
    src = the_plan.source
    console.print(
        f"backbone {src.name} ({'pretrained' if src.pretrained else 'random init'}), "
        f"device {the_plan.cells[0].device}"
    )


def _print_summary(console, records: list[dict]) -> None:
    from rich.table import Table

    from bench.demo import DEMO_NOTICE
    from bench.report import blocks, records_frame, summarize

    df = records_frame(records)
    if df.empty:
        return
    for title, table_df in blocks(summarize(df)):
        table = Table(title=title)
        for col in table_df.columns:
            table.add_column(str(col), justify="left" if col in ("method", "runs") else "right")
        for row in table_df.itertuples(index=False):
            table.add_row(*(str(v) for v in row))
        console.print(table)
    if df["demo"].any():
        console.print(f"[bold yellow]{DEMO_NOTICE}[/]")


def _print_gaps(console, df) -> None:
    """Unfinished and missing cells under the tables, so a partial grid never looks complete."""
    from bench.report.missing import lines, missing_in_grid

    if df.empty:
        return
    bad = df[df["status"] != "ok"]
    for r in bad.itertuples():
        console.print(f"[red]{r.status}[/] {r.run_id}: {r.error}")
    missing = lines(missing_in_grid(df))
    if missing:
        console.print("[yellow]missing cells[/] (no record; run the same grid again to fill them):")
        for line in missing[:20]:
            console.print(f"  {line}")
        if len(missing) > 20:
            console.print(f"  ... and {len(missing) - 20} more in summary.md")


app.command(
    "tune",
    help="Tune every method on validation with the same budget, then run the selected "
    "configuration at every seed (`bench run --tune`; the same options). Every trial is a "
    "record, so a stopped search resumes.",
)(run)


def _list_spaces(console) -> None:
    """`bench list spaces`: what `bench tune` searches for each method."""
    from methods import get_method, list_methods

    table = _table(
        "search spaces (bench tune; --space METHOD.KEY=a,b replaces a grid, --set pins a key)",
        ("method", "optimizer", "size"),
        ("lr (base)", "weight decay", "own knobs", "source"),
    )
    for name in list_methods():
        spec = get_method(name)
        for optimizer, space in spec.search.items():
            rule = f" x batch/{space.lr_rule.reference_batch}" if space.lr_rule else ""
            knobs = "; ".join(f"{k} {list(v)}" for k, v in space.hparams.items()) or "-"
            table.add_row(
                name,
                optimizer + (" (default)" if optimizer == spec.optimizer else ""),
                str(space.size),
                ", ".join(f"{v:g}" for v in space.lr) + rule,
                ", ".join(f"{v:g}" for v in space.weight_decay),
                knobs,
                space.source,
            )
    console.print(table)


@app.command("list")
def list_(
    what: Annotated[
        str, typer.Argument(help="methods, datasets, augmentations, protocols, backbones or all.")
    ] = "all",
    backbone: Annotated[
        str, typer.Option(help="Backbone on which to count trainable parameters.")
    ] = "demo-vit",
    num_classes: Annotated[int, typer.Option(help="Head size for the trainable counts.")] = 7,
) -> None:
    """Show the registered methods (with defaults and trainable counts), the dataset catalog and
    suggested backbones."""
    kinds = ("all", "methods", "spaces", "datasets", "augmentations", "protocols", "backbones")
    if what not in kinds:
        _fail(f"`bench list {what}`: expected one of {', '.join(kinds)}")
    from bench.errors import UserError

    try:
        console = _console()
        if what in ("all", "methods"):
            from bench.harness import trainable_counts
            from methods import CORE_METHODS, get_method, list_methods

            counts = trainable_counts(list_methods(), backbone=backbone, num_classes=num_classes)
            table = _table(
                "methods",
                ("name", "core", "optimizer", "lr", "wd", "trainable"),
                ("hyperparameters", "what it does", "paper"),
            )
            table.caption = f"trainable: with the defaults on {backbone}, {num_classes} classes"
            for name in list_methods():
                spec = get_method(name)
                hp = ", ".join(f"{k}={v}" for k, v in spec.hparams.items()) or "-"
                core = (
                    "yes" if name in CORE_METHODS or set(spec.aliases) & set(CORE_METHODS) else ""
                )
                row = (
                    name,
                    core,
                    spec.optimizer,
                    f"{spec.lr:g}"
                    + (f" x b/{spec.lr_rule.reference_batch}" if spec.lr_rule else ""),
                    f"{spec.weight_decay:g}",
                    counts[name],
                )
                table.add_row(*row, hp, spec.summary, spec.paper)
            console.print(table)
        if what in ("all", "spaces"):
            _list_spaces(console)
        if what in ("all", "datasets"):
            from bench.catalog import load_catalog

            table = _table(
                "datasets (`bench data info NAME`)",
                ("name", "task", "classes", "metric", "format", "epochs"),
                ("what it is",),
            )
            for card in load_catalog().values():
                table.add_row(
                    card.name,
                    card.task,
                    str(len(card.classes)),
                    card.primary_metric,
                    card.format,
                    str(card.epochs),
                    card.title,
                )
            console.print(table)
        if what in ("all", "augmentations"):
            from bench.transforms import AUGMENTATIONS, DEFAULT_AUGMENT

            table = _table("augmentations (--augment)", ("name",), ("what it does",))
            for name, aug in AUGMENTATIONS.items():
                table.add_row(name + (" (default)" if name == DEFAULT_AUGMENT else ""), aug.summary)
            console.print(table)
        if what in ("all", "protocols"):
            from bench.protocols import get_protocol, list_protocols

            table = _table("protocols (--protocol, report --paper)", ("name",), ("what it runs",))
            for name in list_protocols():
                p = get_protocol(name)
                shots = (
                    f", {'/'.join(map(str, p.shots))}-shot x {len(p.split_seeds or ())}"
                    if p.shots
                    else ""
                )
                table.add_row(
                    name, f"{p.title}: {len(p.methods)} methods x {len(p.datasets)} datasets{shots}"
                )
            console.print(table)
        if what in ("all", "backbones"):
            from bench.backbones import SUGGESTED_BACKBONES

            console.print(
                "backbones: any timm ViT name (`timm.list_models('vit_*')`), e.g. "
                + ", ".join(SUGGESTED_BACKBONES)
            )
    except UserError as exc:  # a bad card in $MEDPEFT_CARDS, an unknown backbone
        _fail(str(exc))


def _table(title: str, fixed: tuple[str, ...], wrapping: tuple[str, ...]):
    """Names never wrap (they are what users type); descriptions take the remaining width."""
    from rich.table import Table

    table = Table(title=title)
    for col in fixed:
        table.add_column(col, no_wrap=True)
    for col in wrapping:
        table.add_column(col, overflow="fold", ratio=1)
    return table


@app.command()
def report(
    results: Annotated[Path, typer.Option(help="Folder of JSON records.")] = Path("results"),
    out: Annotated[Path, typer.Option(help="Folder for the rendered report.")] = Path("reports"),
    datasets: Annotated[
        str | None, typer.Option(help="Only these datasets (comma-separated).")
    ] = None,
    methods: Annotated[
        str | None, typer.Option(help="Only these methods (comma-separated).")
    ] = None,
    backbone: Annotated[
        str | None, typer.Option(help="Only these backbones (comma-separated).")
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            help="Only records whose config has KEY=VALUE (or KEY!=VALUE; KEY=a,b for any of "
            "several; dotted keys reach hyperparameters: hparams.rank=8; shots=full). Repeatable."
        ),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(help="Method the paired tests compare against [default: full, else linear]."),
    ] = None,
    plots: Annotated[bool, typer.Option(help="Draw the figures (PNG and PDF).")] = True,
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
        parse_where,
        records_frame,
        select_records,
        write_paper_table,
        write_report,
    )

    console = _console()
    if not results.is_dir():
        _fail(f"no results folder {results}; run `bench run` first or pass --results")
    if out.exists() and not out.is_dir():
        _fail(f"--out {out} exists and is not a folder; name a folder for the report")
    loaded = load_records(results)
    for path, what in loaded.notes():
        console.print(f"[yellow]skipped[/] {path}: {what}", soft_wrap=True)
    try:
        if paper is not None:
            from bench.protocols import get_protocol

            get_protocol(paper)  # an unknown name fails before anything is written
            from bench.report import PAPER_REGIMES

            if paper_regime not in PAPER_REGIMES:
                raise UserError(
                    f"--paper-regime must be one of {', '.join(PAPER_REGIMES)}, not "
                    f"{paper_regime!r}"
                )
        from bench.report import is_profile, profile_frame

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
        _fail(str(exc))
    if grid_records and not chosen:
        console.print(
            f"[yellow]no record matches the filters[/] ({len(grid_records)} record(s) in "
            f"{results}); the report will be empty"
        )
    _print_summary(console, chosen)
    _print_gaps(console, df)
    if len(profiles):
        from rich.table import Table

        from bench.report import profile_tables

        for title, frame in profile_tables(profiles):
            table = Table(title=f"profile: {title}")
            for col in frame.columns:
                table.add_column(str(col), justify="left" if col == "method" else "right")
            for row in frame.itertuples(index=False):
                table.add_row(*(str(v) for v in row))
            console.print(table)
    try:
        written = write_report(
            df, out, plots=plots, baseline=base, profiles=profiles, records=chosen
        )
        if paper is not None:
            # The paper's table reads every record: the protocol picks its own cells.
            written += write_paper_table(paper, records_frame(loaded.records), out, paper_regime)
    except OSError as exc:
        _fail(f"cannot write the report in {out}: {exc.strerror or exc}; choose another --out")
    console.print(
        f"wrote {len(written)} file(s) in {out}/ ({len(df)} record(s)): open {out / 'index.html'}"
    )
    for path in written:
        console.print(f"  {path}")


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
