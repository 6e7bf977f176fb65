"""Missing cells: what a grid or a paper protocol asks for that no record answers.

Failed, OOM and diverged cells have records and are reported as such elsewhere; this module
lists the cells with no record at all, so a report never looks complete when it is not.
"""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd

from bench.report.names import block_title
from bench.report.stats import prepare

MISSING_NOTE = (
    "Cells with no record at all, against the grid the records imply: in each block every "
    "method run on that backbone, for every (split seed, seed) any method ran there. Run the "
    "same `bench run` command again to fill them."
)


def _run_text(split_seed: int, seed: int, few_shot: bool) -> str:
    return f"split {split_seed} seed {seed}" if few_shot else f"seed {seed}"


def missing_in_grid(df: pd.DataFrame) -> pd.DataFrame:
    """Cells missing from the grid the records imply: in every block (dataset, shots,
    backbone), every method run on that backbone is expected for every (split seed, seed) any
    method ran in the block.

    One row per (block, method) with something missing: block, method, n_missing, n_expected,
    runs (e.g. "seed 2" or "split 1 seed 0", comma-separated).
    """
    cols = ["block", "method", "n_missing", "n_expected", "runs"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    p = prepare(df)
    methods_of = {bb: list(pd.unique(g["method"])) for bb, g in p.groupby("backbone", sort=False)}
    rows: list[dict[str, Any]] = []
    for (ds, k, bb), block in p.groupby(["dataset", "shots_key", "backbone"], sort=False):
        expected = sorted(set(zip(block["split_seed"], block["seed"], strict=True)))
        for method in methods_of[bb]:
            mine = block[block["method"] == method]
            have = set(zip(mine["split_seed"], mine["seed"], strict=True))
            lack = [run for run in expected if run not in have]
            if lack:
                rows.append(
                    {
                        "block": block_title(ds, k, bb),
                        "method": method,
                        "n_missing": len(lack),
                        "n_expected": len(expected),
                        "runs": ", ".join(_run_text(s, t, bool(k)) for s, t in lack),
                    }
                )
    return pd.DataFrame(rows, columns=cols)


def lines(missing: pd.DataFrame) -> list[str]:
    """Missing cells (either frame here) as one line per (block, method)."""
    return [
        f"{r.block} / {r.method}: {r.n_missing} of {r.n_expected} runs have no record ({r.runs})"
        for r in missing.itertuples()
    ]


def missing_in_protocol(protocol: Any, long: pd.DataFrame) -> pd.DataFrame:
    """Cells of a paper protocol's grid (datasets x shots x split seeds x methods x seeds) with
    no record among `long` (already restricted to the protocol's settings).

    One row per (dataset, shots, method) with something missing: block, dataset, shots (None =
    full data), method, n_missing, n_expected, runs.
    """
    cols = ["block", "dataset", "shots", "method", "n_missing", "n_expected", "runs"]
    shots = list(protocol.shots) if protocol.shots else [None]
    splits = list(protocol.split_seeds) if protocol.shots and protocol.split_seeds else [0]
    have: set[tuple[Any, ...]] = set()
    if len(long):
        p = prepare(long)
        have = set(
            zip(p["dataset"], p["shots_key"], p["method"], p["split_seed"], p["seed"], strict=True)
        )
    rows = []
    for ds, k, method in itertools.product(protocol.datasets, shots, protocol.methods):
        runs = list(itertools.product(splits, protocol.seeds))
        lack = [(s, t) for s, t in runs if (ds, k or 0, method, s, t) not in have]
        if lack:
            rows.append(
                {
                    "block": block_title(ds, k or 0),
                    "dataset": ds,
                    "shots": k,
                    "method": method,
                    "n_missing": len(lack),
                    "n_expected": len(runs),
                    "runs": ", ".join(_run_text(s, t, k is not None) for s, t in lack),
                }
            )
    return pd.DataFrame(rows, columns=cols)
