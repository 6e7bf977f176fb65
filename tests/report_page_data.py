"""Records of a realistic demo report, written by hand: 9 methods (long names among them), two
blocks, every optional cost, searches and a failed cell; for the page tests and a look by eye."""

from __future__ import annotations

from typing import Any

METHODS = ("linear", "full", "lora", "vpt_deep", "adaptformer", "fpt_plus",
           "ssf_with_a_rather_long_registered_name", "bitfit", "prompt_tuning_v2")  # fmt: skip
BLOCKS = (("dermamnist", 4, "vit_small_patch16_224.augreg_in21k"),
          ("chestdr_demo_subset", 16, "vit_small_patch16_224.augreg_in21k"))  # fmt: skip


def _calibration() -> dict[str, Any]:
    count = [0] * 15
    count[10], count[14] = 3, 5
    conf = [None] * 15
    acc = [None] * 15
    conf[10], acc[10], conf[14], acc[14] = 0.7, 0.6, 0.95, 1.0
    return {"n_bins": 15, "count": count, "confidence": conf, "accuracy": acc}


def record(method: str, block: int, seed: int, *, status: str = "ok", **cfg: Any) -> dict:
    dataset, shots, backbone = BLOCKS[block]
    i = METHODS.index(method)
    score = 0.55 + 0.03 * i + 0.01 * seed - 0.05 * block
    share = 100.0 if method == "full" else 0.05 * (i + 1) ** 2
    mem = {"own_mb": 900.0 + 350.0 * i, "own_definition": "most PyTorch allocated at once"}
    config = {"dataset": dataset, "method": method, "backbone": backbone, "seed": seed,
              "shots": shots, "split_seed": seed, "pretrained": True, "epochs": 3, **cfg}  # fmt: skip
    ok = status == "ok"
    return {
        "schema": 1,
        "run_id": f"{dataset}-{method}-{seed}-{sorted(cfg.items())}",
        "status": status,
        "error": None if ok else "CUDA out of memory while training at batch 64",
        "demo": True,
        "config": config,
        "metrics": {
            "primary_metric": "accuracy",
            "primary": score if ok else None,
            "test": {"accuracy": score, "ece": 0.04 + 0.01 * seed} if ok else {},
            "calibration": _calibration() if ok else None,
        },
        "params": {
            "trainable_params": int(share * 220_000),
            "trainable_pct": share,
            "trainable_pct_no_head": share * 0.9,
        },
        "cost": {
            "wall_s": 60.0,
            "phases_s": {"train": 40.0 + 7 * i},
            "train_step": {"throughput_img_s": 1800.0 / (i + 1)},
            "memory": {
                "train": mem,
                "preload": {**mem, "own_mb": 120.0 + i},
                "eval": {**mem, "own_mb": 400.0 + 10 * i},
            },
            "flops": {
                "train_gflops": 13.8 + 1.1 * i,
                "inference_gflops": 4.6 + 0.1 * i,
                "inference_overhead_gflops": 0.013 * i,
            },
            "latency_b1": {"median_ms": 3.2 + 0.4 * i},
            "energy": {"train_j_per_image": 0.8 + 0.05 * i, "eval_j_per_image": 0.21},
        }
        if ok
        else {},
    }


def search(method: str, block: int, seed: int) -> dict:
    """A tuned final run with its search (8 of 24 configurations)."""
    trials = [{"run_id": f"t{k}", "config": {"lr": 10.0 ** -(k % 4 + 2), "rank": 4 * (k % 3 + 1),
                                              "weight_decay": 0.05, "dropout": 0.1},
               "outcome": "ok", "val_primary": 0.5 + 0.02 * k} for k in range(8)]  # fmt: skip
    tuning = {"role": "final", "budget": 8, "tune_seed": 0, "space": "lora-space"}
    rec = record(method, block, seed, tuning=tuning, lr=1e-3)
    rec["tuning"] = {"budget": 8, "tune_seed": 0, "mode": "random", "selected": 7,
                     "space": {"size": 24, "lr_rule": "linear in batch / 256"},
                     "selected_by": "validation accuracy", "trials": trials}  # fmt: skip
    return rec


def realistic_records() -> list[dict]:
    out = [record(m, b, s) for b in range(2) for m in METHODS for s in range(3)
           if (m, b, s) != ("vpt_deep", 1, 2)]  # fmt: skip
    out.append(record("vpt_deep", 1, 2, status="oom"))
    out += [search("lora", b, s) for b in range(2) for s in range(3)]
    return out
