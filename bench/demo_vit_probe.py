"""Linear probing of demo-vit (`bench.demo_vit`): how much its pretraining helps on the demo
task, against the same architecture at random initialisation; `python -m bench.demo_vit_probe`
pretrains and measures the figures the recipe quotes."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.cache_dirs import check_cache_writable
from bench.demo_vit import (
    build_demo_vit,
    demo_vit_path,
    normalize,
    pick_threads,
    pretrain_demo_vit,
    restore_threads,
)


@torch.no_grad()
def _features(model: nn.Module, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """CLS features after the final norm, as the harness's linear probe sees them."""
    out = []
    for i in range(0, len(images), batch):
        x = normalize(images[i : i + batch])
        out.append(model.forward_head(model.forward_features(x), pre_logits=True))
    return torch.cat(out)


def linear_probe(
    model: nn.Module,
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    lrs: Sequence[float] = (1e-2, 1e-3),
    epochs: int = 10,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Linear-probe a frozen backbone the way the harness does; returns the best lr's accuracies.

    Frozen backbone in eval mode; CLS features after the final norm; an `nn.Linear` trained with
    AdamW (weight decay 0) on random horizontal flips of the training images; the epoch with the
    best val accuracy is kept. Features of each image and its mirror image are computed once,
    which is equivalent to flipping on the fly because the backbone is frozen and deterministic.
    """
    was_training = model.training
    model.eval()
    tensors = {k: torch.from_numpy(v[0]).permute(0, 3, 1, 2) for k, v in splits.items()}
    ys = {k: torch.from_numpy(np.asarray(v[1], dtype=np.int64)) for k, v in splits.items()}
    with restore_threads():
        pick_threads(lambda: _features(model, tensors["train"][:64]))
        feats = {k: _features(model, x) for k, x in tensors.items()}
        train_flipped = _features(model, tensors["train"].flip(-1))
    model.train(was_training)
    n, dim = feats["train"].shape
    num_classes = int(max(int(y.max()) for y in ys.values())) + 1
    best: dict[str, Any] = {"val": -1.0}
    for lr in lrs:
        gen = torch.Generator().manual_seed(seed)
        head = nn.Linear(dim, num_classes)
        with torch.no_grad():  # seeded head init without touching the global RNG
            bound = 1 / math.sqrt(dim)
            head.weight.uniform_(-bound, bound, generator=gen)
            head.bias.uniform_(-bound, bound, generator=gen)
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
        for epoch in range(epochs):
            flip = torch.rand(n, generator=gen) < 0.5
            x_ep = torch.where(flip[:, None], train_flipped, feats["train"])
            order = torch.randperm(n, generator=gen)
            for i in range(0, n, batch_size):
                idx = order[i : i + batch_size]
                loss = F.cross_entropy(head(x_ep[idx]), ys["train"][idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                acc = {
                    k: float((head(feats[k]).argmax(1) == ys[k]).float().mean())
                    for k in ("val", "test")
                }
            if acc["val"] > best["val"]:
                best = {**acc, "lr": lr, "epoch": epoch + 1}
    return best


def pretrain_and_probe(out: Path, *, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Pretrain demo-vit into `out`, then linear-probe it against random initialisation on demo
    seeds 0 and 1 (the figures this module's docstring quotes). Returns the pretraining's facts
    with `probe`: [{demo_seed, pretrained, random_init}] test accuracies."""

    check_cache_writable(out.parent)  # a UserError before minutes of pretraining
    facts = pretrain_demo_vit(out, seed=seed, progress=progress)
    facts["probe"] = [probe_weights(out, demo_seed) for demo_seed in (0, 1)]
    return facts


def probe_weights(path: Path, demo_seed: int) -> dict[str, Any]:
    """Linear-probe test accuracy of demo-vit with the weights in `path`, and at random init, on
    the demo drawn with `demo_seed`."""
    from bench.demo import DEMO_CLASSES, make_demo

    splits = make_demo(demo_seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(demo_seed)
        pre = linear_probe(build_demo_vit(len(DEMO_CLASSES), weights=path), splits, seed=demo_seed)
        rnd = linear_probe(
            build_demo_vit(len(DEMO_CLASSES), pretrained=False), splits, seed=demo_seed
        )
    return {"demo_seed": demo_seed, "pretrained": pre["test"], "random_init": rnd["test"]}


def main() -> None:
    """`python -m bench.demo_vit_probe [--seed N] [--out PATH]` (= `bench data pretrain-demo`):
    pretrain, then linear-probe it against random init on demo seeds 0 and 1."""
    import argparse

    from bench.errors import UserError

    parser = argparse.ArgumentParser(
        prog="python -m bench.demo_vit_probe", description=main.__doc__
    )
    parser.add_argument("--seed", type=int, default=0, help="pretraining seed")
    parser.add_argument("--out", type=Path, default=None, help="weights file (default: the cache)")
    args = parser.parse_args()
    try:
        facts = pretrain_and_probe(args.out or demo_vit_path(), seed=args.seed)
    except UserError as exc:
        parser.error(str(exc))
    print(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
