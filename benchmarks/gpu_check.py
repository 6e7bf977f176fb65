"""The suite's GPU check: one script, one table, well inside 10 minutes on one GPU.

1. costs: the core methods on ViT-B/16 at 224 px, batch 64, in bf16 and fp32 (`bench profile`'s
   measurement, `bench.profiling.profile_method`): step time, throughput, memory, FLOPs, batch-1
   latency; with --all-methods every other registered method too, in the first precision;
2. fpt-memory: FPT+ (frozen model at 512 px, side network at 128) against full fine-tuning at
   512 px, batch 16 (the FPT+ paper's setting), and the ratio of their training memory; the paper
   reports 736 / 23128 = 3.18 % (its README's figures);
3. overhead: `bench.train.fit`'s training step against a bare timm-style loop on the same model,
   batch, precision and optimizer; the goal is a ratio of 1.02 or less.

`--device cpu` runs the same code at small sizes (a tiny ViT, tiny batches) so CI keeps it
working; its figures mean nothing. Run it as `benchmarks/gpu_check.sh [--device cpu]`; it writes
`gpu_check.json` and `gpu_check.md` to --out. Each measurement runs in this process, one after
another, its memory peak reset per phase (exact on a GPU; on the host `bench.measure.StepMemory`
counts a steady step's tensors).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from bench.profiling import profile_method
from methods import CORE_METHODS, get_method, list_methods

# Per device: the sizes that give meaningful figures on a GPU and seconds on a CPU.
SIZES: dict[str, dict[str, Any]] = {
    "cuda": {"backbone": "vit_base_patch16_224", "img": 224, "batch": 64, "steps": 10,
             "repeats": 3, "precisions": ("bf16", "fp32"), "fpt_img": 512, "fpt_batch": 16,
             "overhead_steps": 30},
    "cpu": {"backbone": "test_vit", "img": 32, "batch": 4, "steps": 2, "repeats": 1,
            "precisions": ("fp32",), "fpt_img": 64, "fpt_batch": 2, "overhead_steps": 8},
}  # fmt: skip
PAPER_FPT_MEMORY_PCT = 100 * 736 / 23128  # FPT+ README: FPT+ 736, full fine-tuning 23128


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _profile(method: str, *, device: torch.device, precision: str, img: int, batch: int,
             size: dict[str, Any], hparams: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """`bench profile`'s figures for one method; a failure becomes a row that says so."""
    try:
        out = profile_method(method, backbone=size["backbone"], img_size=img, batch_size=batch,
                             steps=size["steps"], repeats=size["repeats"], device=str(device),
                             precision=precision, hparams=hparams)  # fmt: skip
    except torch.cuda.OutOfMemoryError as exc:
        out = {"method": method, "status": "oom", "error": str(exc).splitlines()[0]}
    except Exception as exc:  # one method's failure must not hide the other figures
        out = {"method": method, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    _release(device)
    return {"precision": precision, "batch": batch, **out}


def _row(section: str, r: dict[str, Any]) -> dict[str, Any]:
    """One line of the table from a profile result."""
    if r.get("status", "ok") != "ok":
        return {"section": section, "method": r["method"], "precision": r.get("precision"),
                "status": r["status"], "note": r.get("error", "")[:80]}  # fmt: skip
    info = r.get("method_info") or {}
    flops, latency = r.get("flops") or {}, r.get("latency_b1") or {}
    return {
        "section": section,
        "method": r["method"],
        "precision": r["precision"],
        "img": f"{r['img_size']}" + (f"/{info['side_size']}" if "side_size" in info else ""),
        "batch": r["batch_size"],
        "trainable %": round(r["trainable_pct"], 3),
        "train ms/step": round(1e3 * r["step"]["step_time_median_s"], 1),
        "train img/s": round(r["step"]["throughput_img_s"], 1),
        "infer img/s": round(r["inference"]["throughput_img_s"], 1),
        "train MB": _round(r.get("train_memory_mb")),
        "infer MB": _round(r.get("inference_memory_mb")),
        "train GFLOPs/img": _round(flops.get("train_gflops"), 2),
        "infer GFLOPs/img": _round(flops.get("inference_gflops"), 2),
        "b1 latency ms": _round(latency.get("median_ms"), 2),
        "train J/img": _round((r.get("energy") or {}).get("train_j_per_image"), 3),
        "status": "ok",
    }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(float(value), digits)


def costs(device: torch.device, size: dict[str, Any], *, all_methods: bool, deadline: float,
          log: list[str]) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    # "fpt" is an alias of "fpt-plus"; a training-free method (knn) has no training step to time
    core = [get_method(m).name for m in CORE_METHODS if not get_method(m).training_free]
    plan = [(m, p) for p in size["precisions"] for m in core]
    if all_methods:
        plan += [(m, size["precisions"][0]) for m in list_methods()
                 if m not in core and not get_method(m).training_free]  # fmt: skip
    for method, precision in plan:
        if time.monotonic() > deadline:
            log.append(f"costs: out of time before {method} ({precision}); skipped the rest")
            break
        r = _profile(method, device=device, precision=precision, img=size["img"],
                     batch=size["batch"], size=size)  # fmt: skip
        rows.append(_row("costs", r))
        print(f"  costs {method} {precision}: {rows[-1].get('train ms/step')} ms/step", flush=True)
    return rows


def fpt_memory(device: torch.device, size: dict[str, Any], log: list[str]) -> list[dict[str, Any]]:
    """FPT+ at its paper's resolutions against full fine-tuning at the same input size."""
    img, batch, precision = size["fpt_img"], size["fpt_batch"], size["precisions"][0]
    side = img // 4  # FPT+'s side network at a quarter of the frozen model's resolution
    fpt = _profile("fpt-plus", device=device, precision=precision, img=img, batch=batch,
                   size=size, hparams={"lpm_size": img, "side_size": side})  # fmt: skip
    full = _profile("full", device=device, precision=precision, img=img, batch=batch, size=size)
    rows = [_row("fpt-memory", fpt), _row("fpt-memory", full)]
    if fpt.get("train_memory_mb") and full.get("train_memory_mb"):
        pct = 100 * fpt["train_memory_mb"] / full["train_memory_mb"]
        rows[0]["note"] = (
            f"{pct:.2f} % of full's training memory (paper: {PAPER_FPT_MEMORY_PCT:.2f} %)"
        )
        log.append(f"fpt-memory: FPT+ {img}/{side} uses {pct:.2f} % of full fine-tuning's "
                   f"training memory at {img} px, batch {batch} (paper: {PAPER_FPT_MEMORY_PCT:.2f} %)")  # fmt: skip
    return rows


def overhead(device: torch.device, size: dict[str, Any], log: list[str]) -> list[dict[str, Any]]:
    """Median step time of `fit` against a bare loop: same model, batch, precision, AdamW."""
    from bench.backbones import create_backbone, resolve_backbone
    from bench.harness import adapt
    from bench.measure import StepTimer
    from bench.train import TrainSettings, autocast, build_optimizer, fit, set_train_mode
    from bench.transforms import Preprocess

    spec, precision = get_method("full"), size["precisions"][0]
    img, batch, steps = size["img"], size["batch"], size["overhead_steps"]
    source = resolve_backbone(size["backbone"], pretrained=False, weights=None)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch * steps, 3, img, img), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (batch * steps,), generator=g)
    prep = Preprocess(img_size=img, mean=(0.5,) * 3, std=(0.5,) * 3, augment="none")

    def model() -> nn.Module:
        torch.manual_seed(0)
        return adapt(create_backbone(source, num_classes=10, img_size=img), "full", {})[0].to(
            device
        )

    bare_timer = StepTimer(device, warmup=3)
    net = model()
    opt = build_optimizer(net, spec.optimizer, spec.lr, spec.weight_decay)
    set_train_mode(net)
    x = prep.evaluation(images[:batch].to(device))  # the same views the harness builds
    y = labels[:batch].to(device)
    for _ in range(steps):
        with bare_timer.step(batch):
            with autocast(device, precision):
                loss = nn.functional.cross_entropy(net(x).float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    del net, opt
    _release(device)

    harness_timer = StepTimer(device, warmup=3)
    settings = TrainSettings(epochs=1, batch_size=batch, optimizer=spec.optimizer, lr=spec.lr,
                             weight_decay=spec.weight_decay, warmup_epochs=0.0, grad_clip=0.0,
                             seed=0, device=device, precision=precision, preprocess=prep)  # fmt: skip
    fit(model(), (images, labels), (images[:batch], labels[:batch]), settings,
        score=lambda logits, y: (0.0, {}), timer=harness_timer)  # fmt: skip
    _release(device)
    harness_ms = 1e3 * harness_timer.summary()["step_time_median_s"]
    bare_ms = 1e3 * bare_timer.summary()["step_time_median_s"]
    log.append(f"overhead: harness {harness_ms:.1f} ms/step, bare loop {bare_ms:.1f} ms/step, "
               f"ratio {harness_ms / bare_ms:.3f} (goal <= 1.02)")  # fmt: skip
    return [{"section": "overhead", "method": "full (harness fit)", "precision": precision,
             "img": str(img), "batch": batch, "train ms/step": round(harness_ms, 1),
             "note": f"ratio {harness_ms / bare_ms:.3f} to the bare loop"},
            {"section": "overhead", "method": "full (bare loop)", "precision": precision,
             "img": str(img), "batch": batch, "train ms/step": round(bare_ms, 1)}]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (small sizes, for CI)")
    ap.add_argument("--out", type=Path, default=Path("reports/gpu_check"), help="output folder")
    ap.add_argument(
        "--all-methods",
        action="store_true",
        help="also profile every registered method, not just the core ones",
    )
    ap.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="skip the remaining --all-methods profiles after this many seconds",
    )
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: run with --device cpu for the small-size check", file=sys.stderr)
        return 2
    size = SIZES["cuda" if device.type == "cuda" else "cpu"]
    started = time.monotonic()
    log: list[str] = []
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu_check on {name}, torch {torch.__version__}, {size['backbone']}", flush=True)
    rows = costs(device, size, all_methods=args.all_methods,
                 deadline=started + args.budget_s, log=log)  # fmt: skip
    for section in (fpt_memory, overhead):
        try:
            rows += section(device, size, log)
        except Exception as exc:  # a broken section must not cost the figures already taken
            rows.append({"section": section.__name__.replace("_", "-"), "method": "-",
                         "status": "failed", "note": f"{type(exc).__name__}: {exc}"[:200]})  # fmt: skip
            _release(device)
    table = pd.DataFrame(rows).dropna(axis=1, how="all").astype(object).fillna("")
    text = table.to_markdown(index=False)
    print(text)
    for line in log:
        print(line)
    print(f"took {time.monotonic() - started:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.md").write_text(
        f"# gpu_check: {name}, torch {torch.__version__}\n\n{text}\n\n" + "\n".join(log) + "\n"
    )
    (args.out / "gpu_check.json").write_text(json.dumps(
        {"device": name, "torch": torch.__version__, "rows": rows, "log": log}, indent=1,
        default=str))  # fmt: skip
    failed = [r for r in rows if r.get("status") not in (None, "ok")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
