"""Per-block, seed-level tests: within one block, each method against the baseline with seed
paired with seed. They speak of that block only (its data, shots and backbone), with the seeds
as the replicates; a claim over blocks is the Wilcoxon/Friedman tests' (`stats`, `tests_across`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import ttest_rel

from bench.report.block_scores import seed_means
from bench.report.stats import holm

__all__ = ["MIN_SEEDS", "SEED_TEST_WORDS", "paired_within_blocks"]

# A paired t on 2 seeds has 1 degree of freedom: its interval spans almost anything.
MIN_SEEDS = 3

SEED_TEST_WORDS = (
    "Within each block, a two-sided paired t-test of each method against the baseline, seed "
    "paired with seed (a seed's value is its mean over split seeds); Holm over the methods of "
    f"that block; no test on fewer than {MIN_SEEDS} paired seeds. It says whether the "
    "difference in that block exceeds seed-to-seed noise, not whether it holds on other data."
)


def paired_within_blocks(df: pd.DataFrame, baseline: str, metric: str = "primary") -> pd.DataFrame:
    """One row per (block, method) that ran where the baseline has a score: block, method,
    n_seeds (pairs), mean_diff (method - baseline in pp, positive = better, also for
    lower-is-better metrics), p (`ttest_rel`), p_holm (within the block), note (why no test)."""
    cols = ["block", "method", "n_seeds", "mean_diff", "p", "p_holm", "note"]
    seeds = seed_means(df, metric)
    seeds = seeds.assign(v=np.where(seeds["lower_better"], -seeds["value"], seeds["value"]))
    rows = []
    for block, part in seeds.groupby("block", sort=False):
        base = part[part["method"] == baseline].set_index("seed")["v"]
        if base.empty:
            continue
        block_rows = []
        for method, own in part[part["method"] != baseline].groupby("method", sort=False):
            pair = own.set_index("seed")["v"].to_frame("m").join(base.rename("b"), how="inner")
            d = (pair["m"] - pair["b"]).to_numpy(float)
            p, note = math.nan, ""
            if d.size < MIN_SEEDS:
                note = f"{d.size} paired seed(s); the test needs {MIN_SEEDS}"
            elif np.allclose(d, d[0]):
                note = "every seed differs by the same amount; t undefined"
            else:
                p = float(ttest_rel(pair["m"], pair["b"]).pvalue)
            mean = float(d.mean()) if d.size else math.nan
            block_rows.append([block, method, int(d.size), mean, p, note])
        adjusted = holm([r[4] for r in block_rows])
        rows += [[*r[:5], float(a), r[5]] for r, a in zip(block_rows, adjusted, strict=True)]
    return pd.DataFrame(rows, columns=cols)
