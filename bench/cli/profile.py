"""`bench profile`: steady-state train and inference cost per method on one synthetic batch, each
method in a fresh process (`bench.profiling`); results printed and saved as records that `bench
report` shows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import bench.cli.options as o
from bench.cli.common import fail, stop_when_unsaved
from bench.cli.complete import complete_methods
from bench.console import console, table


def profile(
    methods: Annotated[
        str,
        typer.Option(help="Methods to profile, comma-separated.", autocompletion=complete_methods),
    ] = "full,fpt",
    backbone: Annotated[str, typer.Option(help="Any timm ViT name, or demo-vit.")] = "demo-vit",
    img_size: Annotated[
        int | None,
        typer.Option(
            help="Input size for every method (default: the largest a method's rule asks for, "
            "FPT+'s high resolution)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 16,
    steps: Annotated[
        int,
        typer.Option(help="Timed steps per round (after 2 warm-up steps), train and inference."),
    ] = 5,
    repeats: Annotated[
        int, typer.Option(help="Rounds of timed steps; every figure is the median over rounds.")
    ] = 3,
    device: o.Device = "auto",
    precision: o.Precision = "auto",
    compile_: Annotated[
        bool,
        typer.Option("--compile", help="torch.compile the model; compile time reported apart."),
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="<method.key=value>",
            help="METHOD.KEY=VALUE method hyperparameter (repeatable).",
        ),
    ] = None,
    results: Annotated[
        Path, typer.Option(help="Folder the profile records go to (`bench report` shows them).")
    ] = Path("results"),
    save: Annotated[bool, typer.Option(help="Write one record per method to --results.")] = True,
) -> None:
    """Train step time, train and inference throughput, memory per phase, FLOPs per image and
    batch-1 latency, per method on one synthetic batch, each method in a fresh process; memory
    relative to the first method (full fine-tuning by default)."""
    from bench.config import parse_name_list, parse_sets
    from bench.device_options import check_device_options
    from bench.errors import UserError
    from bench.precheck import check_img_size, precheck_methods

    out = console()
    try:
        sets = parse_sets(set_ or [])
        if batch_size < 1 or steps < 1 or repeats < 1:
            raise UserError("--batch-size, --steps and --repeats must be >= 1")
        precheck_methods(parse_name_list(methods), sets, backbone)  # torch-free: fails at once
        check_img_size(img_size, backbone)
        check_device_options(device, precision)
    except UserError as exc:
        fail(str(exc))
    from bench.grid import (
        GridRequest,
        method_settings,
        resolve_device,
        resolve_methods,
        resolve_precision,
    )
    from bench.measure import environment, gpu_busy_processes
    from bench.profiling import common_img_size, profile_in_subprocess, profile_record
    from bench.records import save_record
    from methods import get_method

    try:
        names = resolve_methods(parse_name_list(methods))
        free = [m for m in names if get_method(m).training_free]
        if free:
            out.print(f"[cyan]note[/] {', '.join(free)} trains nothing: no training step to "
                      "profile (its cost is in `bench run`'s records)")  # fmt: skip
            names = [m for m in names if m not in free]
        if not names:
            raise UserError("no method left to profile; choose methods that train")
        dev = resolve_device(device)
        resolved = resolve_precision(precision, dev)  # the same rule and messages as bench run
        from bench.backbones import resolve_backbone

        resolve_backbone(backbone, pretrained=False, weights=None)
        req = GridRequest(methods=names, datasets=[], seeds=[0], backbone=backbone, sets=sets)
        hparams = {m: method_settings(m, req)[1] for m in names}
        if img_size is None:
            img_size = common_img_size(names, backbone, hparams)
    except UserError as exc:
        fail(str(exc))
    busy = None
    if dev.startswith("cuda"):
        busy = gpu_busy_processes(0)
        if busy:
            out.print(
                f"[yellow]warning[/]: {len(busy)} other process(es) use the GPU "
                f"({', '.join(str(p['pid']) for p in busy)}); timings and NVML memory may be off"
            )
        elif busy is None:
            out.print("NVML unavailable: could not check that the GPU is otherwise idle")
    env = environment()
    rows = []
    # a record the disk cannot take goes to the temp folder, and the command stops on one line
    with stop_when_unsaved():
        try:
            for name in names:
                out.print(f"profiling {name} …")
                rows.append(
                    profile_in_subprocess(
                        name,
                        backbone=backbone,
                        img_size=img_size,
                        batch_size=batch_size,
                        steps=steps,
                        repeats=repeats,
                        device=dev,
                        precision=resolved,
                        compile=compile_,
                        hparams=hparams[name],
                    )
                )
                if save:
                    save_record(results, profile_record(rows[-1], env=env, busy=busy))
        except UserError as exc:
            fail(str(exc))
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    costs = table(
        f"{backbone}, batch {batch_size}, {dev}, {resolved}; "
        f"median of {repeats} rounds x {steps} steps"
    )
    base = ok[0]["train_memory_mb"] if ok else 0.0
    cols = ["method", "img", "trainable %", "train ms/step", "train img/s", "infer img/s",
            "train MB", f"vs {ok[0]['method'] if ok else '-'}", "infer MB", "train GFLOPs",
            "infer GFLOPs", "b1 ms"]  # fmt: skip
    if compile_:
        cols.append("compile s")
    for col in cols:
        costs.add_column(col, justify="left" if col == "method" else "right")
    for r in rows:
        if r.get("status", "ok") != "ok":
            costs.add_row(
                r["method"], str(r.get("img_size")), "", r["status"], *[""] * (len(cols) - 4)
            )
            continue
        info = r.get("method_info") or {}
        img = str(r["img_size"]) + (f"/{info['side_size']}" if "side_size" in info else "")
        cells = [
            r["method"] + (" (cached)" if r["preloaded_features"] else ""),
            img,
            f"{r['trainable_pct']:.3g}",
            f"{1000 * r['step']['step_time_median_s']:.1f}",
            f"{r['step']['throughput_img_s']:.0f}",
            f"{r['inference']['throughput_img_s']:.0f}",
            f"{r['train_memory_mb']:.1f}",
            f"{100 * r['train_memory_mb'] / base:.2f} %" if base > 0 else "n/a",
            f"{r['inference_memory_mb']:.1f}",
            f"{r['flops']['train_gflops']:.3g}",
            f"{r['flops']['inference_gflops']:.3g}",
            f"{r['latency_b1']['median_ms']:.1f}",
        ]
        if compile_:
            cells.append(f"{r['compile_s']:.1f}")
        costs.add_row(*cells)
    out.print(costs)
    if ok:
        out.print(f"train MB: {ok[0]['train_memory_definition']}. (cached): trains from features "
                  "computed once, its frozen model released; inference runs the whole model. "
                  "GFLOPs per image, counted: train = one step's forward and backward, infer = "
                  "the whole model's forward. b1 ms: one image through the whole model.")  # fmt: skip
    if save:
        out.print(f"{len(rows)} profile record(s) in {results}/ (`bench report` shows them)")
