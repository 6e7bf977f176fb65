"""The options several `bench` commands share, declared once, grouped into help panels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bench.cli import choices
from bench.cli.complete import complete_datasets, complete_methods
from bench.cli.config_file import load_config
from bench.option_values import SELECT_RULES

GRID = "Grid"
TRAINING = "Training"
TUNING = "Tuning"
LAUNCH = "Launch"
OUTPUT = "Output"

# Grid: which cells a grid has. --protocol sets them all.
Methods = Annotated[
    str,
    typer.Option(
        help="Comma-separated methods; 'core' = full, linear, knn, vpt, lora, ept, fpt (the "
        "default), 'all' = every registered method; `bench list methods` lists them.",
        rich_help_panel=GRID,
        autocompletion=complete_methods,
    ),
]
Datasets = Annotated[
    str,
    typer.Option(
        help="Comma-separated datasets from the catalog (`bench list`).",
        rich_help_panel=GRID,
        autocompletion=complete_datasets,
    ),
]
Seeds = Annotated[str, typer.Option(help="Training seeds: '0,1,2' or '0-4'.", rich_help_panel=GRID)]
Shots = Annotated[
    str | None,
    typer.Option(
        help="Few-shot: K images per class (per label for multi-label) from train, e.g. "
        "1,5,10. Default: the full training split.",
        rich_help_panel=GRID,
    ),
]
SplitSeeds = Annotated[
    str | None,
    typer.Option(
        help="Which few-shot samples, apart from training seeds: '0-4' (default 0). Cards "
        "with published split files read exp<seed+1>.",
        rich_help_panel=GRID,
    ),
]
Augment = Annotated[
    str,
    typer.Option(
        help="Training augmentation preset (`bench list augmentations`).", rich_help_panel=GRID
    ),
]
Backbone = Annotated[
    str,
    typer.Option(
        help="A timm ViT name, hf-hub:ORG/NAME (a timm model on the Hugging Face hub, e.g. "
        "hf-hub:MahmoodLab/uni), or 'demo-vit' (the suite-pretrained demo backbone).",
        rich_help_panel=GRID,
    ),
]
Weights = Annotated[
    Path | None,
    typer.Option(
        help="Local pretrained weights (safetensors or timm state dict) instead of the hub.",
        rich_help_panel=GRID,
    ),
]
NoPretrained = Annotated[
    bool,
    typer.Option(
        "--no-pretrained",
        help="Random init: the 'does pretraining help' baseline.",
        rich_help_panel=GRID,
    ),
]
Epochs = Annotated[
    int | None,
    typer.Option(help="Epochs per cell (default: the dataset card's).", rich_help_panel=GRID),
]
BatchSize = Annotated[
    int, typer.Option(help="Batch size for training and evaluation.", rich_help_panel=GRID)
]
Lr = Annotated[
    float | None,
    typer.Option(
        help="Learning rate for every method (default: each method's own).", rich_help_panel=GRID
    ),
]
ImgSize = Annotated[
    int | None,
    typer.Option(
        help="Input size for every method (default: the backbone's native size; FPT+/FPT "
        "run their frozen model at high resolution by their own rule).",
        rich_help_panel=GRID,
    ),
]
Set = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="<method.key=value>",  # typer would show <list[str]> for a repeatable option
        help="A method hyperparameter, METHOD.KEY=VALUE (repeatable), e.g. linear.lr=0.01.",
        rich_help_panel=GRID,
    ),
]
Protocol = Annotated[
    str | None,
    typer.Option(
        help="A paper's grid (`bench list protocols`), or your own protocol file (a path "
        "ending in .toml, same keys): methods, datasets, shots, seeds, budget and backbone as "
        "the paper ran them; with --dry-run, also the data it needs.",
        rich_help_panel=GRID,
    ),
]

# Training: how each cell trains; part of a cell's identity too.
Device = Annotated[
    choices.Device,
    typer.Option(help="auto: cuda, else mps on Apple silicon, else cpu.", rich_help_panel=TRAINING),
]
Precision = Annotated[
    choices.Precision,
    typer.Option(
        help="auto (bf16 on GPUs of compute capability 8.0+, fp16 on older ones such as V100 "
        "and T4, fp32 on mps and cpu; the record says why), bf16, fp16 (autocast with loss "
        "scaling) or fp32.",
        rich_help_panel=TRAINING,
    ),
]
Compile = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile each model's forward; the compile time is recorded apart "
        "(cost.compile_s), not in the step time.",
        rich_help_panel=TRAINING,
    ),
]
WarmupEpochs = Annotated[
    float,
    typer.Option(
        help="Linear warm-up length in epochs before the cosine decay.", rich_help_panel=TRAINING
    ),
]
Select = Annotated[
    choices.Select,
    typer.Option(
        help="Which epoch's weights each cell tests, chosen on validation before the test split "
        "is read: "
        + "; ".join(f"{name}: {what}" for name, what in SELECT_RULES.items())
        + ". Other than best, it joins the run id.",
        rich_help_panel=TRAINING,
    ),
]
GradClip = Annotated[
    float,
    typer.Option(help="Gradient-norm clipping threshold (0 disables).", rich_help_panel=TRAINING),
]
OomRetry = Annotated[
    bool,
    typer.Option(
        "--oom-retry",
        help="Retry a cell that runs out of GPU memory at half the batch size, down to 1 "
        "(the record keeps the requested cell and says the batch size used); also retries "
        "oom records an earlier run left.",
        rich_help_panel=TRAINING,
    ),
]

# Tuning: the search `bench tune` (or `bench run --tune`) runs first.
Tune = Annotated[
    bool,
    typer.Option(
        "--tune",
        help="Search each method's declared space first (what `bench tune` does): --budget "
        "trials per (dataset, shots, split, method) selected on validation, then the "
        "selected configuration at every seed.",
        rich_help_panel=TUNING,
    ),
]
Budget = Annotated[
    int | None,
    typer.Option(
        help="--tune: configurations tried per method and dataset, the same for every "
        "method [8]; the whole grid when the space is smaller.",
        rich_help_panel=TUNING,
    ),
]
TuneSeed = Annotated[
    int | None,
    typer.Option(
        help="--tune: seeds the order of the search and trains its trials [0].",
        rich_help_panel=TUNING,
    ),
]
Scheduler = Annotated[
    choices.Scheduler | None,
    typer.Option(
        help="--tune: 'none' (every trial trains all epochs) or 'halving' (successive "
        "halving: all --budget configurations train a short schedule, the best 1/--eta go on "
        "to --eta times the epochs, up to the full epochs) [none].",
        rich_help_panel=TUNING,
    ),
]
Eta = Annotated[
    int | None,
    typer.Option(
        help="--tune --scheduler halving: keep the best 1/eta [3].", rich_help_panel=TUNING
    ),
]
Space = Annotated[
    list[str] | None,
    typer.Option(
        "--space",
        metavar="<method.key=a,b>",
        help="--tune: search these values instead of the declared grid, METHOD.KEY=a,b,c "
        "(repeatable), e.g. vpt.prompt_length=1,10; lr values are base values where the "
        "method declares a batch rule (`bench list spaces`). --set pins a key instead.",
        rich_help_panel=TUNING,
    ),
]

# Launch: where the cells run.
Launcher = Annotated[
    choices.Launcher,
    typer.Option(
        help="local: cells in this process; subprocess: each cell in a fresh process (one "
        "per GPU with --gpus); slurm: one Slurm job per cell through submitit.",
        rich_help_panel=LAUNCH,
    ),
]
Gpus = Annotated[
    str | None,
    typer.Option(
        help="subprocess launcher: GPUs to keep busy, one cell each, e.g. 0,1,2,3.",
        rich_help_panel=LAUNCH,
    ),
]
Partition = Annotated[
    str | None, typer.Option(help="slurm: the partition.", rich_help_panel=LAUNCH)
]
Time = Annotated[
    int | None,
    typer.Option(
        "--time", help="slurm: time limit per job in minutes [60].", rich_help_panel=LAUNCH
    ),
]
GpusPerJob = Annotated[
    int | None,
    typer.Option(help="slurm: GPUs per job [1; 0 with --device cpu].", rich_help_panel=LAUNCH),
]
MaxConcurrent = Annotated[
    int | None,
    typer.Option(help="slurm: most jobs of the array running at once.", rich_help_panel=LAUNCH),
]
SlurmConfig = Annotated[
    Path | None,
    typer.Option(
        help="slurm: TOML with partition, time, gpus_per_job, max_concurrent, cluster "
        "(options given here win) and account, qos, mem or mem_gb, cpus_per_task, constraint, "
        "exclude, nodelist, setup (shell lines), [additional] (other sbatch options).",
        rich_help_panel=LAUNCH,
    ),
]
SlurmCluster = Annotated[
    choices.Cluster | None,
    typer.Option(
        help="slurm: 'slurm' [default], or 'local' to run the jobs here (submitit).",
        rich_help_panel=LAUNCH,
    ),
]
Wait = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="slurm: wait for the jobs and print each outcome; with --tune, run every stage "
        "of the search (trials, rungs, finals) to the end.",
        rich_help_panel=LAUNCH,
    ),
]

# Output: where records go and what the command prints (--data-root: with the plain options).
ResultsOut = Annotated[
    Path, typer.Option(help="Folder for the JSON records.", rich_help_panel=OUTPUT)
]
ResultsIn = Annotated[Path, typer.Option(help="Folder of JSON records.")]
DataRoot = Annotated[
    Path | None,
    typer.Option(
        help="Where datasets live (default $MEDPEFT_DATA or ~/.local/share/medpeft-bench)."
    ),
]
Force = Annotated[
    bool,
    typer.Option(
        "--force", help="Rerun cells that already have a finished record.", rich_help_panel=OUTPUT
    ),
]
AllowFailures = Annotated[
    bool,
    typer.Option(
        "--allow-failures",
        help="Exit 0 even when cells failed, ran out of memory or diverged (by default "
        "such a grid exits 1; bad input exits 2, an interrupted run 130).",
        rich_help_panel=OUTPUT,
    ),
]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Print the grid and exit.", rich_help_panel=OUTPUT)
]
Artefacts = Annotated[
    bool,
    typer.Option(
        "--artefacts/--no-artefacts",
        help="Save each finished cell's trained tensors beside its record "
        "(<run id>.trainable.safetensors; peft methods also <run id>.adapter/) for `bench "
        "export`. Full fine-tuning saves the whole model. Not part of the run id.",
        rich_help_panel=OUTPUT,
    ),
]
JsonPlan = Annotated[
    bool,
    typer.Option(
        "--json",
        help="With --dry-run: the plan as one JSON document on stdout. Keys: cells (each "
        "run_id, method, dataset, shots, split_seed, seed, epochs, lr, img_size, hparams, state, "
        "config), backbone, pretrained, device, results, notes, compute {cells, "
        "training_images, unknown_size_cells}, and with --protocol: protocol {name, settings "
        "(each setting, protocol, default, source), differences}; with --tune instead: budget, tune_seed, "
        "scheduler, searches (each group, trials, space_size, mode, axes, lr_reference_batch, "
        "rungs), trials (as cells), final_seeds, final_cells, results, notes.",
        rich_help_panel=OUTPUT,
    ),
]
Progress = Annotated[bool, typer.Option(help="Show progress bars.", rich_help_panel=OUTPUT)]
Tracker = Annotated[
    str,
    typer.Option(
        help="Also follow each cell live in experiment trackers: a comma list of tensorboard, "
        "wandb, mlflow (each an extra: pip install 'medpeft-bench[trackers]'), or none. "
        "The JSON records stay the results; W&B reads WANDB_PROJECT (default medpeft-bench) "
        "and WANDB_MODE, MLflow MLFLOW_TRACKING_URI.",
        rich_help_panel=OUTPUT,
    ),
]
TrackerDir = Annotated[
    Path | None,
    typer.Option(
        help="Where trackers write local files (default: the results folder): "
        "tensorboard/<run id>, mlruns (without MLFLOW_TRACKING_URI), wandb (without WANDB_DIR).",
        rich_help_panel=OUTPUT,
    ),
]

# A study's options in one file; given first so every other option can take its default from it.
Config = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML grid file whose keys are this command's option names (snake_case or "
        'dashed), e.g. methods = ["fpt", "vpt"], seeds = "0-2", set = {vpt = {prompt_length = '
        "10}}; an option given on the command line wins; paths in it are relative to it.",
        callback=load_config,
        is_eager=True,
        rich_help_panel=GRID,
    ),
]
