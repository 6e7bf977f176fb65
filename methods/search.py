"""Search spaces: the grids `bench tune` searches for a method, and the batch rule its lr scales by."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.option_values import TRAIN_AXES

# KMnP/vpt's weight-decay grid (`tune_fgvc.py`), used by every declared space unless a paper
# searched another.
WD_GRID: tuple[float, ...] = (0.01, 1e-3, 1e-4, 0.0)
DEFAULT_SPACE_SOURCE = "suite: half-decade grid around the default (no paper grid)"


def lr_around(default: float) -> tuple[float, ...]:
    """Half-decade steps around a default, default x {0.1, 0.3, 1, 3, 10}: the learning-rate grid
    of methods whose papers give none (lr_around(1e-3) -> 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)."""
    return tuple(float(f"{default * f:.3g}") for f in (0.1, 0.3, 1, 3, 10))


@dataclass(frozen=True)
class LrRule:
    """A learning rate declared for a reference batch size, scaled linearly to the batch used
    (Goyal et al. 2017; VPT: base lr x batch/256)."""

    reference_batch: int = 256

    def scale(self, base_lr: float, batch_size: int) -> float:
        return base_lr * batch_size / self.reference_batch

    def describe(self) -> str:
        return f"lr = base lr x batch/{self.reference_batch}"


@dataclass(frozen=True)
class SearchSpace:
    """What `bench tune` searches: a grid of values per axis (lr, weight_decay and the method's
    own knobs), in the order a search crosses them; lr values are base values under `lr_rule`
    when it is set. `source` says where the grids come from (the paper's, or this suite's).

    A method declares one with `SearchSpace.grid(...)`; `bench tune` resolves it for a request
    (--space replaces grids, --set/--lr pin keys), which names the method, its optimizer and the
    pinned keys the space no longer searches."""

    axes: Mapping[str, tuple[Any, ...]]
    lr_rule: LrRule | None = None
    source: str = ""
    method: str = ""
    optimizer: str = ""
    pinned: tuple[str, ...] = ()

    @classmethod
    def grid(
        cls,
        lr: Iterable[float],
        weight_decay: Iterable[float] = WD_GRID,
        hparams: Mapping[str, tuple[Any, ...]] | None = None,
        *,
        lr_rule: LrRule | None = None,
        source: str = "",
    ) -> SearchSpace:
        """A declared space: learning rates, weight decays (the shared grid unless given), then
        the method's own knobs."""
        axes = {"lr": tuple(lr), "weight_decay": tuple(weight_decay), **(hparams or {})}
        return cls(axes, lr_rule=lr_rule, source=source)

    @property
    def lr(self) -> tuple[float, ...]:
        return self.axes.get("lr", ())

    @property
    def weight_decay(self) -> tuple[float, ...]:
        return self.axes.get("weight_decay", ())

    @property
    def hparams(self) -> dict[str, tuple[Any, ...]]:
        """The method's own knobs (every axis but the training ones)."""
        return {k: v for k, v in self.axes.items() if k not in TRAIN_AXES}

    def knobs(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The method's own hyperparameters in one configuration of the space."""
        return {k: v for k, v in config.items() if k not in TRAIN_AXES}

    @property
    def size(self) -> int:
        """Configurations in the space: the product of the grids."""
        return math.prod(len(v) for v in self.axes.values())

    def describe(self) -> dict[str, Any]:
        """What the records say about a resolved space."""
        return {
            "optimizer": self.optimizer,
            "axes": {k: list(v) for k, v in self.axes.items()},
            "lr_rule": self.lr_rule.describe() if self.lr_rule else None,
            "source": self.source,
            "pinned": list(self.pinned),
            "size": self.size,
        }

    def digest(self) -> str:
        """Identifies what is searched (not how it is described): it keys the search order and
        tags the selected runs, so rewording a space's `source` keeps every trial valid."""
        what = {k: v for k, v in self.describe().items() if k != "source"}
        blob = json.dumps(what, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def order(self, seed: int) -> list[dict[str, Any]]:
        """Every configuration, in the order a search with this seed tries them: the product of
        the grids shuffled by a generator seeded with (seed, method, space), so a search is
        reproducible and a budget of k tries the first k of a larger budget's trials."""
        keys = list(self.axes)
        product = itertools.product(*self.axes.values())
        combos = [dict(zip(keys, values, strict=True)) for values in product]
        random.Random(f"medpeft-tune:{seed}:{self.method}:{self.digest()}").shuffle(combos)
        return combos
