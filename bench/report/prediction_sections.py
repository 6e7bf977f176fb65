"""The statistics that need saved test predictions: test-set bootstrap intervals, per-class
results with confusion matrices, and DeLong tests against the baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.records import write_atomic
from bench.report.bootstrap import MIN_TEST_IMAGES, N_BOOT, image_interval
from bench.report.confusion_figure import write_confusion
from bench.report.delong import delong_test
from bench.report.names import slug
from bench.report.per_class import class_columns, confusion, pooled_class_scores
from bench.report.predicted import by_block
from bench.report.stat_text import marked, p_text, score_text, section
from bench.report.tables import best_marks

__all__ = ["delong_rows", "prediction_sections"]

BOOT_WORDS = (
    "Uncertainty from the finite test set: the primary metric recomputed on test images "
    "resampled with replacement (within each class for single-label tasks, so every class "
    f"stays present); no interval below {MIN_TEST_IMAGES} test images. It does not include "
    "seed-to-seed variation (that is the t interval of the score tables)."
)
CLASS_WORDS = (
    "Per class, from the argmax prediction (multi-label: logit > 0): precision, recall "
    "(sensitivity), F1, and the one-vs-rest ROC AUC, each the mean of the per-seed values (%); "
    "support is the class's test images. Confusion matrices are summed over seeds."
)
DELONG_WORDS = (
    "DeLong's test of two correlated ROC AUCs on the same test images, each method against the "
    "baseline, seed paired with seed (binary: the positive class; otherwise per class, one vs "
    "rest). AUCs are means over seeds; p is the median of the per-seed p-values, a summary "
    "rather than one combined test. It speaks of this test set only."
)


def _pct(v: float) -> str:
    return score_text(100.0 * v)


def _interval_rows(runs: pd.DataFrame, n_boot: int, seed: int) -> tuple[pd.DataFrame, list[str]]:
    rows, words = [], []
    for block, part in by_block(runs):
        for method, own in part.groupby("method", sort=False):
            pairs = list(zip(own["logits"], own["labels"], strict=True))
            iv = image_interval(pairs, own["task"].iloc[0], own["metric"].iloc[0],
                                   n_boot=n_boot, seed=seed)  # fmt: skip
            words.append(iv.over)
            rows.append([block, method, len(pairs), score_text(iv.point),
                         f"{score_text(iv.lo)} to {score_text(iv.hi)}", iv.note])  # fmt: skip
    cols = ["block", "method", "seeds", "score", "95% interval", "note"]
    return pd.DataFrame(rows, columns=cols), list(dict.fromkeys(words))


def delong_rows(part: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """DeLong per method and class against `baseline` in one block's runs (columns logits,
    labels, task, classes, method, seed, split_seed): method, class, seeds, AUC, AUC of the
    baseline (%), median p over the seeds paired on the same test images."""
    base = {(r.seed, r.split_seed): r for r in part[part["method"] == baseline].itertuples()}
    out = []
    for method, own in part[part["method"] != baseline].groupby("method", sort=False):
        per: dict[int, list[tuple[float, float, float]]] = {}
        for r in own.itertuples():
            b = base.get((r.seed, r.split_seed))
            if b is None or not np.array_equal(b.labels, r.labels):
                continue
            task = r.task
            mine, theirs = class_columns(r.logits, task), class_columns(b.logits, task)
            member = r.labels.astype(bool) if task == "multilabel" else None
            for j in [1] if task == "binary" else range(mine.shape[1]):
                y = member[:, j] if member is not None else r.labels == j
                if 0 < y.sum() < len(y):
                    per.setdefault(j, []).append(delong_test(y, mine[:, j], theirs[:, j]))
        classes = own["classes"].iloc[0]
        for j, results in per.items():
            a, b_, p = np.array(results).T
            name = classes[j] if isinstance(classes, list) and j < len(classes) else str(j)
            out.append([method, name, len(results), _pct(a.mean()), _pct(b_.mean()),
                        p_text(float(np.nanmedian(p)) if np.isfinite(p).any() else np.nan)])  # fmt: skip
    return pd.DataFrame(out, columns=["method", "class", "seeds", "AUC", "AUC base", "median p"])


def _class_parts(
    part: pd.DataFrame, block: str, out_dir: Path, demo: bool, draw: bool
) -> tuple[list[tuple[str, ...]], pd.DataFrame, list[Path]]:
    task, classes = part["task"].iloc[0], part["classes"].iloc[0]
    frames, matrices = [], {}
    for method, own in part.groupby("method", sort=False):
        pairs = list(zip(own["logits"], own["labels"], strict=True))
        scores = pooled_class_scores(pairs, task, classes if isinstance(classes, list) else None)
        frames.append(scores.assign(block=block, method=method))
        if task != "multilabel":
            matrices[method] = sum(confusion(lg, y) for lg, y in pairs)
    table = pd.concat(frames, ignore_index=True)
    seeds = "/".join(map(str, sorted(set(table["n_seeds"]))))
    tables = [_by_class(table, column, f"{block}: {words} per class (%, mean over {seeds} seed(s))")
              for column, words in CLASS_TABLES]  # fmt: skip
    figures = []
    if matrices and draw:
        names = table["class"].iloc[: len(next(iter(matrices.values())))].tolist()
        figures = write_confusion(matrices, names, out_dir / "figures", f"confusion-{slug(block)}",
                                  title=f"{block}: confusion summed over seeds", demo=demo)  # fmt: skip
    return tables, table, figures


# The per-class tables on the page (precision and every value with its support: per_class.csv).
CLASS_TABLES = (("recall", "recall (sensitivity)"), ("f1", "F1"), ("auc", "one-vs-rest ROC AUC"))


def _by_class(table: pd.DataFrame, column: str, caption: str) -> tuple[str, ...]:
    """One value per class (rows) and method (columns), the class's support last; each class's
    best and second best method marked."""
    wide = table.pivot(index="class", columns="method", values=column)
    wide = wide.reindex(index=list(dict.fromkeys(table["class"])),
                        columns=list(dict.fromkeys(table["method"])))  # fmt: skip
    support = table.drop_duplicates("class").set_index("class")["support"]
    shown = wide.map(_pct).rename_axis(columns=None).reset_index()
    ranks = pd.DataFrame(0, index=shown.index, columns=shown.columns)
    for i, (_, row) in enumerate(wide.iterrows()):
        for method, mark in best_marks(row.round(3).to_dict(), lower_better=False,
                                       decimals=3).items():  # fmt: skip
            ranks.at[i, method] = mark
    shown["support"] = support.reindex(wide.index).to_numpy()
    ranks["support"] = 0
    return caption, shown, ranks


def prediction_sections(
    runs: pd.DataFrame,
    baseline: str,
    out_dir: Path,
    *,
    demo: bool = False,
    n_boot: int = N_BOOT,
    seed: int = 0,
    notes: list[str] | None = None,
    figures: bool = True,
) -> tuple[list[dict[str, Any]], list[Path]]:
    """The three sections from `runs` (`predicted.prediction_runs`) and the files written
    (figures, per_class.csv)."""
    if runs.empty:
        line = "No run has saved test predictions."
        return [section("From saved predictions", line, notes=notes or [])], []
    intervals, words = _interval_rows(runs, n_boot, seed)
    sections = [section("Test-set bootstrap intervals", BOOT_WORDS,
                        [marked("Primary metric per block and method", intervals, "score")],
                        notes=[*words, *(notes or [])])]  # fmt: skip
    tables, drawn, all_classes, delong = [], [], [], []
    for block, part in by_block(runs):
        t, frame, figs = _class_parts(part, block, out_dir, demo, figures)
        tables += t
        drawn += figs
        all_classes.append(frame)
        d = delong_rows(part, baseline)
        if len(d):
            delong.append((f"{block}: against {baseline}", d))
    csv = out_dir / "per_class.csv"
    classes = pd.concat(all_classes, ignore_index=True).assign(demo=demo)  # as every report CSV
    write_atomic(csv, classes.to_csv(index=False))
    pngs = [f for f in drawn if f.suffix == ".png"]
    sections.append(section("Per-class results", CLASS_WORDS, tables, pngs,
                            [f"All per-class values: {csv.name}."]))  # fmt: skip
    sections.append(section("DeLong tests of ROC AUC", DELONG_WORDS, delong,
                            notes=[] if delong else [f"No test: no run pairs with {baseline} "
                                                     "on the same test images."]))  # fmt: skip
    return sections, [*drawn, csv]
