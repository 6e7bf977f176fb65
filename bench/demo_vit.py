"""`demo-vit`: a small timm Vision Transformer that the suite pretrains itself on CPU in ~75 s,
and ships pretrained (`bench/assets/`), so a first run trains no backbone.

Why: no pretrained ViT can be downloaded in an offline sandbox, yet PEFT only makes sense on top
of a pretrained backbone. So the suite pretrains a small standard timm `VisionTransformer`
(class token, `blocks`, `norm`, `head`; img 64, patch 8) on a *source* task and benchmarks PEFT
methods on the *target* demo task (`bench.demo.make_demo`).

Source task (`bench.demo.make_source`): synthetic tissue patches from the same generative family
as the demo, but drawn from their own random stream, with broader stains (half of them with
permuted stain channels, like IHC or special stains) and with every combination of generative
factors, including ones the demo never shows (clustered nuclei, spindles lining lumens, ...).
Each image is labelled by six factors, one softmax head each (18 outputs in one linear `head`):
nuclear shape (round / aligned spindles / haphazard spindles / irregular), layout (scattered /
lining lumens / clustered), chromatin (solid / vesicular / speckled), nuclear size, cell density
and pleomorphism. The demo's five classes are particular *conjunctions* of some of these factors,
with the rest acting as nuisances. That is the relation natural-image pretraining has to medical
imaging: the source teaches generic visual attributes (edges, shapes, textures, layouts) on a
broader, differently labelled distribution; the target needs a new classifier that combines
them. The source head is dropped from the saved weights.

Recipe (version `DEMO_VIT_VERSION`; bump it whenever anything below changes):

- data: 6000 source images (`SOURCE_IMAGES`, stream `seed`), plus 500 more held out to report
  source accuracy; augmentation: random 90-degree rotation (per batch) and horizontal flip (per
  image), which preserve every factor; inputs normalised with `DEMO_VIT_MEAN` / `DEMO_VIT_STD`
  (the source pixel statistics);
- model: `timm.create_model("vit_small_patch16_224", pretrained=False, **DEMO_VIT_KWARGS)`;
- loss: sum of per-factor cross-entropies, the shape factor weighted 2 (it is learnt last);
- optimiser: AdamW, lr 2e-3, betas (0.9, 0.999), weight decay 0.05 on matrices only, batch 32,
  1600 steps (`STEPS`, about 8.5 epochs), linear warm-up over 5% of the steps then cosine decay to 0,
  gradient-norm clipping at 1.0;
- determinism: numpy `SeedSequence` streams for data, a private `torch.Generator` for order and
  augmentation, `torch.manual_seed(seed)` (inside `fork_rng`) for the initial weights; no
  dropout. Results are bit-identical on one CPU type with one thread count. The thread count
  is measured, not fixed (every 400 steps the fastest of all usable cores, half of them, or
  one is taken: a core shared with another busy process made two threads 20x slower than
  one), so it, like another CPU type, can change the last bits.

On the 2-core development machine it takes about 70-75 s (5 s of it generating data) when
nothing else runs; shared cores make it many times slower, which is why the package ships the
weights it made (seed 0): `bench/assets/demo-vit-v1.safetensors`, rebuilt by `bench data
pretrain-demo --out bench/assets/demo-vit-v1.safetensors` (tests/test_demo.py re-pretrains and
checks that the probe accuracy of both files agrees). Linear
probing the result on the demo (frozen backbone, CLS features) reached 87-92% test accuracy over
three pretraining seeds, against about 20% (chance) for the same architecture at random
initialisation, whose CLS token barely depends on the input; see
`bench.demo_vit_probe.linear_probe` and `python -m bench.demo_vit_probe`.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.backbone_geometry import DEMO_VIT_KWARGS
from bench.cache_dirs import STALE_TEMP_S, cache_root, check_cache_writable

DEMO_VIT_VERSION = "demo-vit-v1"
# Pixel mean/std of the source images (after /255), the way ImageNet statistics are used.
DEMO_VIT_MEAN: tuple[float, float, float] = (0.77, 0.56, 0.77)
DEMO_VIT_STD: tuple[float, float, float] = (0.13, 0.13, 0.10)

_ARCH = "vit_small_patch16_224"
_HEAD_KEYS = frozenset({"head.weight", "head.bias"})
# pretrain_demo_vit's temp files (mkstemp: .<file name>.<8 random characters>.tmp), any version.
_TEMP_NAME = re.compile(r"^\.demo-vit-.+\.safetensors\.[a-z0-9_]{8}\.tmp$")

SOURCE_IMAGES = 6000
SOURCE_HOLDOUT = 500
STEPS = 1600
BATCH_SIZE = 32
LR = 2e-3
WEIGHT_DECAY = 0.05
WARMUP_FRACTION = 0.05
GRAD_CLIP = 1.0
# Loss weight per source factor (order of bench.demo.SOURCE_FACTORS): shape counts double.
LOSS_WEIGHTS = (2.0, 1.0, 1.0, 1.0, 1.0, 1.0)
_MAX_THREADS = 8
# Steps between re-measuring the fastest thread count (other processes come and go).
_THREAD_CHECK_EVERY = 400


def demo_vit_cache_dir() -> Path:
    """Where demo-vit weights are cached: the cache root ($MEDPEFT_CACHE, else
    ~/.cache/medpeft-bench)."""
    return cache_root()


def demo_vit_path() -> Path:
    """The cache file of the current recipe version (it may not exist yet)."""
    return demo_vit_cache_dir() / f"{DEMO_VIT_VERSION}.safetensors"


def shipped_demo_vit_path() -> Path:
    """The weights the package ships for the current recipe version (absent from a package built
    without them, and stale after a recipe change until rebuilt)."""
    return Path(__file__).resolve().parent / "assets" / f"{DEMO_VIT_VERSION}.safetensors"


def create_demo_vit(num_classes: int) -> nn.Module:
    """A randomly initialised demo-vit with a `num_classes` head (uses the global torch RNG)."""
    import timm

    return timm.create_model(_ARCH, pretrained=False, num_classes=num_classes, **DEMO_VIT_KWARGS)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N,3,H,W] (or [N,H,W,3] numpy-order, detected by the last dim) -> normalised float."""
    if images.shape[-1] == 3 and images.shape[1] != 3:
        images = images.permute(0, 3, 1, 2)
    mean = torch.tensor(DEMO_VIT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(DEMO_VIT_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def _thread_limit() -> int:
    """CPUs this process may run on, capped: the model is small, more threads only add overhead."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(available, _MAX_THREADS))


def pick_threads(work: Callable[[], object]) -> int:
    """Set torch's thread count to the fastest of a few candidates, timing `work` with each.

    Measured, not assumed: when another process keeps a core busy, two OpenMP threads on two
    cores ran this model 20x *slower* than one thread on the development machine.
    """
    limit = _thread_limit()
    best, best_time = limit, math.inf
    for n in sorted({limit, max(1, limit // 2), 1}, reverse=True):
        torch.set_num_threads(n)
        work()  # warm-up
        start = time.perf_counter()
        work()
        work()
        elapsed = time.perf_counter() - start
        if elapsed < best_time:
            best, best_time = n, elapsed
    torch.set_num_threads(best)
    return best


@contextmanager
def restore_threads():
    """Restore torch's thread count afterwards (it is process-wide)."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _factor_loss(logits: torch.Tensor, labels: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Weighted sum of one cross-entropy per factor over consecutive slices of the logits."""
    total, start = logits.new_zeros(()), 0
    for k, (size, weight) in enumerate(zip(sizes, LOSS_WEIGHTS, strict=True)):
        total = total + weight * F.cross_entropy(logits[:, start : start + size], labels[:, k])
        start += size
    return total


@torch.no_grad()
def _factor_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, sizes
) -> list[float]:
    model.eval()
    logits = torch.cat([model(normalize(images[i : i + 256])) for i in range(0, len(images), 256)])
    accs, start = [], 0
    for k, size in enumerate(sizes):
        pred = logits[:, start : start + size].argmax(1)
        accs.append(float((pred == labels[:, k]).float().mean()))
        start += size
    return accs


def pretrain_demo_vit(out_path: Path, *, seed: int = 0, progress: bool = True) -> dict:
    """Pretrain demo-vit on the source task and write its weights (no head) as safetensors.

    The file is written to a temporary name in the same folder and moved into place atomically.
    Returns facts about the run: seconds, steps, source accuracy per factor, and so on.
    """
    from safetensors.torch import save_file

    from bench.console import console, progress_bar
    from bench.demo import SOURCE_FACTORS, make_source

    out_path = Path(out_path)
    t0 = time.perf_counter()
    sizes = [len(values) for _, values in SOURCE_FACTORS]
    images, labels = make_source(SOURCE_IMAGES + SOURCE_HOLDOUT, seed=seed)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # uint8, 2 bytes/px less
    y_all = torch.from_numpy(labels)
    x_train, y_train = x_all[:SOURCE_IMAGES], y_all[:SOURCE_IMAGES]
    x_hold, y_hold = x_all[SOURCE_IMAGES:], y_all[SOURCE_IMAGES:]
    gen_seconds = time.perf_counter() - t0

    with restore_threads():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_demo_vit(sum(sizes))
        gen = torch.Generator().manual_seed(seed)
        # Weight decay on weight matrices only, not on norms, biases, tokens or positions.
        decay = [
            p
            for n, p in model.named_parameters()
            if p.ndim > 1 and n not in ("pos_embed", "cls_token")
        ]
        rest = [
            p
            for n, p in model.named_parameters()
            if not (p.ndim > 1 and n not in ("pos_embed", "cls_token"))
        ]
        opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": WEIGHT_DECAY},
                {"params": rest, "weight_decay": 0.0},
            ],
            lr=LR,
        )
        warmup = max(1, int(STEPS * WARMUP_FRACTION))

        def lr_factor(step: int) -> float:
            return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / STEPS))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
        model.train()
        order, cursor, loss_avg = torch.randperm(SOURCE_IMAGES, generator=gen), 0, 0.0
        threads: list[int] = []
        # stderr, like every progress report, so stdout stays clean for results.
        bar = progress_bar(
            console=console(stderr=True),
            show=progress,
            transient=False,
            label="pretraining demo-vit",
            counter="{task.completed}/{task.total} steps, loss {task.fields[loss]:.2f}",
        )
        with bar:
            task = bar.add_task("pretrain", total=STEPS, loss=float("nan"))
            for step in range(STEPS):
                if cursor + BATCH_SIZE > SOURCE_IMAGES:
                    order, cursor = torch.randperm(SOURCE_IMAGES, generator=gen), 0
                idx = order[cursor : cursor + BATCH_SIZE]
                cursor += BATCH_SIZE
                xb = normalize(x_train[idx])
                # Rotations and flips change no factor (alignment is relative, not absolute).
                xb = torch.rot90(xb, int(torch.randint(0, 4, (1,), generator=gen)), (2, 3))
                flip = torch.rand(len(xb), generator=gen) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
                if step % _THREAD_CHECK_EVERY == 0:
                    # Forward and backward only: gradients are reset below, weights untouched.
                    threads.append(pick_threads(lambda xb=xb: model(xb).sum().backward()))
                loss = _factor_loss(model(xb), y_train[idx], sizes)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
                opt.step()
                sched.step()
                loss_avg = loss.item() if step == 0 else 0.98 * loss_avg + 0.02 * loss.item()
                bar.update(task, advance=1, loss=loss_avg)
        train_seconds = time.perf_counter() - t0 - gen_seconds
        accs = _factor_accuracy(model, x_hold, y_hold, sizes)

    state = {
        k: v.detach().contiguous().clone()
        for k, v in model.state_dict().items()
        if k not in _HEAD_KEYS
    }
    facts: dict[str, Any] = {
        "version": DEMO_VIT_VERSION,
        "seed": seed,
        "steps": STEPS,
        "batch_size": BATCH_SIZE,
        "source_images": SOURCE_IMAGES,
        "final_loss": round(loss_avg, 4),
        "source_accuracy": {
            name: round(a, 4) for (name, _), a in zip(SOURCE_FACTORS, accs, strict=True)
        },
        "source_accuracy_mean": round(float(np.mean(accs)), 4),
        "generate_seconds": round(gen_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "threads": threads,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    try:
        metadata = {"format": "pt", "seed": str(seed), **_recipe_metadata()}
        save_file(state, tmp, metadata=metadata)
        os.replace(tmp, out_path)  # atomic: racing writers each put a complete file in place
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    facts["seconds"] = round(time.perf_counter() - t0, 2)
    facts["path"] = str(out_path)
    return facts


def _recipe_metadata() -> dict[str, str]:
    """What identifies the recipe inside a weights file's safetensors metadata."""
    return {
        "recipe": DEMO_VIT_VERSION,
        "arch": _ARCH,
        "kwargs": json.dumps(DEMO_VIT_KWARGS, sort_keys=True),
    }


def _is_current(path: Path) -> bool:
    """Whether a cached file was made by this recipe (reads only the file's header)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception:  # truncated or foreign file: make a new one
        return False
    return all(metadata.get(k) == v for k, v in _recipe_metadata().items())


def ensure_demo_vit(*, progress: bool = True) -> Path:
    """The demo-vit weights: the cache's when it holds this recipe's (rebuilt there, or made before
    the package shipped them: a results folder started with them goes on with the same weights),
    else the shipped ones, else pretrained into the cache first (a few minutes of CPU).

    A cached file from another recipe or architecture (checked in its metadata) is replaced. An
    unwritable cache fails before pretraining, not after it.
    """
    from bench.records import remove_old_temp

    path = demo_vit_path()
    shipped = shipped_demo_vit_path()
    if not (path.is_file() and _is_current(path)) and shipped.is_file() and _is_current(shipped):
        return shipped
    if not (path.is_file() and _is_current(path)):
        check_cache_writable(path.parent)
        # temp files of pretraining runs killed before their rename (a live run's is seconds old)
        remove_old_temp(path.parent, age_s=STALE_TEMP_S, name_ok=_TEMP_NAME.match)
        if progress:
            print(
                f"demo-vit weights not cached; pretraining them once into {path} (75 s on two "
                "idle CPU cores, longer when they are busy)",
                file=sys.stderr,
            )
        pretrain_demo_vit(path, seed=0, progress=progress)
    return path


def build_demo_vit(
    num_classes: int, pretrained: bool = True, weights: Path | None = None
) -> nn.Module:
    """A demo-vit with a fresh `num_classes` head and pretrained (cached or given) weights.

    With `pretrained=False` every weight keeps timm's random initialisation (global torch RNG).
    """
    from safetensors.torch import load_file

    if weights is not None and not pretrained:
        raise ValueError("weights given with pretrained=False; drop one of them")
    model = create_demo_vit(num_classes)
    if pretrained:
        path = Path(weights) if weights is not None else ensure_demo_vit()
        missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
        # Only the head may be absent from the file: anything else means a different model.
        if set(missing) - _HEAD_KEYS or unexpected:
            raise ValueError(
                f"{path} does not match demo-vit {DEMO_VIT_VERSION}: missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)}"
            )
    return model
