"""Bootstrap intervals: over a run's test images (of a seed mean), and over blocks (the IQM
with Agarwal et al.'s stratified bootstrap, NeurIPS 2021). Each says in words what it is over."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import trim_mean

from bench.metric_table import scale
from bench.report.block_scores import BlockScores, usable_runs
from bench.report.prepared import prepare
from bench.report.resampled_metrics import resampled_metric

__all__ = [
    "MIN_TEST_IMAGES",
    "N_BOOT",
    "Interval",
    "image_interval",
    "iqm",
    "iqm_table",
    "resample_indices",
]

N_BOOT = 1000
# Below this many test images a percentile interval rests on too few distinct resamples.
MIN_TEST_IMAGES = 30


@dataclass(frozen=True)
class Interval:
    """A point estimate and its interval in displayed units; `over` says what the interval is
    over (for captions); `note` why there is none (lo and hi NaN then)."""

    point: float
    lo: float
    hi: float
    over: str
    note: str = ""


def iqm(x: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50 % (scipy's trim_mean, 25 % cut each end)."""
    return float(trim_mean(np.asarray(x, dtype=float), 0.25))


def resample_indices(
    labels: np.ndarray, n_boot: int, rng: np.random.Generator, *, stratified: bool
) -> np.ndarray:
    """[n_boot, N] indices drawn with replacement; `stratified` draws each class's images from
    that class only (1-D labels), so every class keeps its test count."""
    n = len(labels)
    if not stratified:
        return rng.integers(0, n, size=(n_boot, n))
    parts = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        parts.append(members[rng.integers(0, members.size, size=(n_boot, members.size))])
    return np.concatenate(parts, axis=1)


def image_interval(
    runs: Sequence[tuple[np.ndarray, np.ndarray]],
    task: str,
    metric: str,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Percentile bootstrap over test images of the mean of `metric` over `runs` (one (logits,
    labels) pair per seed of one method in one block), in displayed units.

    Single-label tasks resample within each class. Runs that share their test set (identical
    labels) get the same resampled images, as the test set is one draw they all share; runs
    that do not are resampled independently. The interval is the test-set sampling error of the
    seed mean only: seed-to-seed variation is the t interval's (`stats.mean_interval`)."""
    if not runs:
        raise ValueError("image_interval needs at least one run")
    runs = [(np.asarray(lg), np.asarray(y)) for lg, y in runs]
    k = len(runs)
    shared = all(np.array_equal(runs[0][1], y) for _, y in runs[1:])
    single = runs[0][1].ndim == 1
    parts = [f"B = {n_boot}"] + (["resampled within each class"] if single else [])
    if k > 1:
        how = "the same images for every seed" if shared else "each seed's resampled independently"
        parts.append(f"mean of {k} seeds, {how}")
    over = f"{level:.0%} percentile bootstrap over test images ({'; '.join(parts)})"
    from bench.metrics import compute_metrics  # torch: as in _replicates

    factor = scale(metric)
    point = float(np.mean([compute_metrics(lg, y, task)[metric] for lg, y in runs])) * factor
    n_min = min((len(y) for _, y in runs), default=0)
    if n_min < MIN_TEST_IMAGES:
        return Interval(point, math.nan, math.nan, over,
                        f"{n_min} test images; a bootstrap needs {MIN_TEST_IMAGES}")  # fmt: skip
    rng = np.random.default_rng(seed)
    common = resample_indices(runs[0][1], n_boot, rng, stratified=single) if shared else None
    per_run = []
    for lg, y in runs:
        idx = common if common is not None else resample_indices(y, n_boot, rng, stratified=single)
        per_run.append(resampled_metric(lg, y, task, metric, idx))
    reps = np.mean(per_run, axis=0)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.nanpercentile(reps * factor, [tail, 100.0 - tail])
    bad = int(np.sum(~np.isfinite(reps)))
    note = f"{bad} of {n_boot} resamples had no defined {metric}" if bad else ""
    return Interval(point, float(lo), float(hi), over, note)


def iqm_table(
    df: pd.DataFrame,
    scores: BlockScores,
    baseline: str,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[pd.DataFrame, str]:
    """IQM per method of its runs' normalised scores over the complete blocks of `scores`, with
    a stratified percentile bootstrap; and the words saying what it is over.

    A run's normalised score is its score minus the baseline's mean in its block, in percentage
    points (oriented: positive = better than the baseline), so that blocks with different
    metrics and difficulty are comparable. Each bootstrap replicate resamples, within every
    block, the method's runs and the baseline's runs (the baseline mean is re-estimated)."""
    cols = ["method", "iqm", "ci_lo", "ci_hi", "n_blocks", "n_runs"]
    over = (
        f"IQM over runs (seeds x split seeds) of score minus the block's {baseline} mean (pp), "
        f"pooled over complete blocks; {level:.0%} stratified percentile bootstrap (B = "
        f"{n_boot}; runs resampled within each block, the {baseline}'s too)"
    )
    complete = scores.complete()
    if baseline not in complete.columns or complete.empty:
        return pd.DataFrame(columns=cols), over
    runs = usable_runs(prepare(df, scores.metric))
    runs = runs[runs["block"].isin(complete.index)]
    runs = runs.assign(v=np.where(runs["lower_better"], -runs["value"], runs["value"]))
    by = {key: part["v"].to_numpy(float) for key, part in runs.groupby(["block", "method"])}
    rng = np.random.default_rng(seed)
    tail = (1.0 - level) / 2.0 * 100.0
    rows = []
    for method in complete.columns:
        points, reps = [], []
        for block in complete.index:
            v, u = by[(block, method)], by[(block, baseline)]
            points.append(v - u.mean())
            u_star = u[rng.integers(0, u.size, size=(n_boot, u.size))].mean(axis=1)
            reps.append(v[rng.integers(0, v.size, size=(n_boot, v.size))] - u_star[:, None])
        pooled = np.concatenate(points)
        boot = trim_mean(np.concatenate(reps, axis=1), 0.25, axis=1)
        lo, hi = np.percentile(boot, [tail, 100.0 - tail])
        rows.append([method, iqm(pooled), float(lo), float(hi), len(complete), pooled.size])
    return pd.DataFrame(rows, columns=cols), over
