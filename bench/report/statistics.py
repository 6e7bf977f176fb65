"""The report's statistics: one entry point, `statistics_report`, that the report calls.

Over blocks (dataset, shots, backbone), the unit a claim about methods generalises over:
Friedman / Iman-Davenport with the Nemenyi critical difference and its diagram, Holm-corrected
comparisons with the baseline (Demšar 2006), Wilcoxon over block means, and the IQM with a
stratified bootstrap (Agarwal et al. 2021). Within a block: seed-paired t-tests. From saved
predictions (when a loader is given): test-set bootstrap intervals, per-class results,
confusion matrices and DeLong tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.report.block_scores import block_means
from bench.report.bootstrap import N_BOOT, iqm_table
from bench.report.cd_diagram import write_cd_diagram
from bench.report.predicted import Loader, prediction_runs
from bench.report.prediction_sections import prediction_sections
from bench.report.seed_tests import SEED_TEST_WORDS, paired_within_blocks
from bench.report.stat_text import marked, p_text, score_text, section, section_markdown
from bench.report.stats import CORRECTION, MIN_PAIRS, average_ranks, paired_vs_baseline
from bench.report.tests_across import MIN_BLOCKS, Across, friedman_test

__all__ = ["StatisticsOutput", "statistics_report"]


@dataclass
class StatisticsOutput:
    """`markdown`: the text of stats.md; `sections`: {"heading", "tables": [(caption, frame)],
    "figures": [Path], "notes": [str]} for the HTML page; `files`: what was written."""

    markdown: str
    sections: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


FRIEDMAN_WORDS = (
    "Over blocks (dataset x shots x backbone; a block plays the role of Demšar's data set), "
    "each method's score is its mean over seeds and split seeds. Methods are ranked within "
    "each complete block (1 = best); the Friedman statistic (Demšar's χ²_F, no tie correction) "
    "and its Iman-Davenport F test whether all methods rank alike. Two methods differ "
    "significantly (Nemenyi, all pairs) when their mean ranks differ by at least the critical "
    "difference CD; against the baseline, z = (R_i - R_c) / sqrt(k(k+1)/(6N)) with Holm over "
    "the k - 1 comparisons. A rejection says the methods' ranks differ across such blocks, "
    "not by how much."
)
WILCOXON_WORDS = (
    "Each method against the baseline over blocks: a pair is one block's two mean scores (over "
    "seeds x split seeds), so n counts blocks, not runs (runs of one block share its data and "
    "are not independent). Two-sided Wilcoxon signed-rank test on the differences (positive = "
    f"the method is better); no test on fewer than {MIN_PAIRS} blocks; p adjusted by "
    f"{CORRECTION}. A small p says the method's advantage holds across blocks."
)
IQM_WORDS = (
    "Aggregate over blocks: each run's score minus the baseline's mean in its block, in "
    "percentage points (positive = better), pooled over the complete blocks; the interquartile "
    "mean (IQM) discards the lowest and highest quarter of runs, so one outlying block or seed "
    "moves it little. The interval is a stratified bootstrap: runs resampled within each block."
)


def _equals(p: str) -> str:
    return p if p.startswith("<") else f"= {p}"


def _all_blocks_ranks(df: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Mean ranks over every block where a method was scored (incomplete blocks too): a
    description, not a test, shown when the test leaves blocks out or cannot run."""
    r = average_ranks(df)
    shown = pd.DataFrame({"method": r["method"], "mean rank": r["mean_rank"].map("{:.2f}".format),
                          "blocks": r["n_blocks"], "not ranked in": r["not_ranked_in"]})  # fmt: skip
    caption = "Mean rank over every block where each method was scored (no test)"
    return marked(caption, shown, "mean rank", lower_better=True)


def _friedman_section(
    df: pd.DataFrame, result: Across, out_dir: Path, demo: bool, draw: bool
) -> tuple[dict, list[Path]]:
    heading = "Methods over blocks: Friedman test and critical difference"
    notes = [f"Left out (not every method scored): {line}" for line in result.excluded]
    described = [_all_blocks_ranks(df)] if result.reason or result.excluded else []
    if result.reason:
        return section(heading, FRIEDMAN_WORDS, described,
                       notes=[f"No test: {result.reason}.", *notes]), []  # fmt: skip
    k, n = len(result.methods), len(result.blocks)
    line = (
        f"Iman-Davenport F = {result.f:.2f} (df {k - 1}, {(k - 1) * (n - 1)}), "
        f"p {_equals(p_text(result.p))}; Friedman χ²_F = {result.chi2:.2f}; k = {k} methods, "
        f"N = {n} complete blocks; CD (α = {result.alpha:g}) = {result.cd:.2f}."
    )
    ranks = pd.DataFrame({"method": result.ranks.index,
                          "mean rank": [f"{v:.2f}" for v in result.ranks]})  # fmt: skip
    tables = [marked("Mean rank over complete blocks (1 = best)", ranks, "mean rank",
                     lower_better=True), *described]  # fmt: skip
    vs = result.vs_control
    if len(vs):
        shown = pd.DataFrame({"method": vs["method"], "mean rank": vs["mean_rank"].map("{:.2f}".format),
                              "z": vs["z"].map("{:.2f}".format), "p": vs["p"].map(p_text),
                              "p (Holm)": vs["p_holm"].map(p_text)})  # fmt: skip
        tables.append(("Against the baseline by mean rank (z < 0: ranked better; Holm)", shown))
    figures = write_cd_diagram(result, out_dir / "figures", demo=demo) if draw else []
    notes = [line, *notes]  # the diagram's title and caption say how to read it
    return section(heading, FRIEDMAN_WORDS, tables, [f for f in figures if f.suffix == ".png"],
                   notes), figures  # fmt: skip


def _wilcoxon_section(df: pd.DataFrame, baseline: str) -> dict:
    heading = f"Against {baseline} over blocks: Wilcoxon signed-rank"
    out = paired_vs_baseline(df, baseline)
    if out.empty or out["n_blocks"].max() < MIN_PAIRS:
        most = int(out["n_blocks"].max()) if len(out) else 0
        return section(heading, WILCOXON_WORDS,
                       notes=[f"No test: at most {most} block(s) pair a method with {baseline}; "
                              f"the test needs {MIN_PAIRS}."])  # fmt: skip
    shown = pd.DataFrame({
        "method": out["method"], "blocks": out["n_blocks"],
        "median Δ (pp)": out["median_diff"].map(score_text),
        "W/T/L": [f"{w}/{t}/{lo}" for w, t, lo in zip(out["wins"], out["ties"], out["losses"],
                                                       strict=True)],
        "p": out["p"].map(p_text), "p (Holm)": out["p_holm"].map(p_text), "note": out["note"],
    })  # fmt: skip
    return section(heading, WILCOXON_WORDS, [(f"Each method minus {baseline}, per block", shown)])


def _seed_section(df: pd.DataFrame, baseline: str) -> dict:
    heading = f"Within each block: seed-paired t-tests against {baseline}"
    out = paired_within_blocks(df, baseline)
    if out.empty or out["p"].isna().all():
        most = int(out["n_seeds"].max()) if len(out) else 0
        why = (f"at most {most} seed(s) pair with {baseline} in a block; the test needs 3"
               if most < 3 else "; ".join(sorted(set(out["note"]) - {""})))  # fmt: skip
        return section(heading, SEED_TEST_WORDS, notes=[f"No test: {why}."])
    shown = pd.DataFrame({"block": out["block"], "method": out["method"], "seeds": out["n_seeds"],
                          "mean Δ (pp)": out["mean_diff"].map(score_text),
                          "p": out["p"].map(p_text), "p (Holm)": out["p_holm"].map(p_text),
                          "note": out["note"]})  # fmt: skip
    return section(heading, SEED_TEST_WORDS, [("Per block, seed-level", shown)])


def _iqm_section(df: pd.DataFrame, scores: Any, baseline: str, n_boot: int, seed: int) -> dict:
    heading = f"Over blocks: IQM of the gain over {baseline}"
    complete = scores.complete()
    if len(complete) < MIN_BLOCKS or baseline not in complete.columns:
        return section(heading, IQM_WORDS,
                       notes=[f"Not computed: {len(complete)} complete block(s) with {baseline}; "
                              f"an aggregate over blocks needs {MIN_BLOCKS}."])  # fmt: skip
    table, over = iqm_table(df, scores, baseline, n_boot=n_boot, seed=seed)
    shown = pd.DataFrame({"method": table["method"], "IQM (pp)": table["iqm"].map(score_text),
                          "95% CI": [f"{score_text(a)} to {score_text(b)}"
                                     for a, b in zip(table["ci_lo"], table["ci_hi"], strict=True)],
                          "blocks": table["n_blocks"], "runs": table["n_runs"]})  # fmt: skip
    return section(heading, IQM_WORDS, [marked(over, shown, "IQM (pp)")])


def statistics_report(
    df: pd.DataFrame,
    baseline: str,
    out_dir: Path,
    *,
    load: Loader | None = None,
    demo: bool = False,
    n_boot: int = N_BOOT,
    seed: int = 0,
    figures: bool = True,
) -> StatisticsOutput:
    """The statistics of `df` (the long records frame) against `baseline`; figures go under
    `out_dir`/figures, per-class CSVs under `out_dir`. `load(path)` reads a predictions file
    (`predictions_file` column); None skips the parts that need predictions, with a note.
    `figures`: draw the CD diagram and the confusion matrices."""
    out_dir = Path(out_dir)
    scores = block_means(df)
    friedman, files = _friedman_section(df, friedman_test(scores, baseline), out_dir, demo, figures)
    sections = [
        friedman,
        _wilcoxon_section(df, baseline),
        _seed_section(df, baseline),
        _iqm_section(df, scores, baseline, n_boot, seed),
    ]
    if load is None:
        sections.append(section("From saved predictions", "Test-set bootstrap intervals, "
                                 "per-class results, confusion matrices and DeLong tests need "
                                 "the runs' saved predictions; none were read."))  # fmt: skip
    else:
        runs, notes = prediction_runs(df, load)
        more, written = prediction_sections(runs, baseline, out_dir, demo=demo, n_boot=n_boot,
                                            seed=seed, notes=notes, figures=figures)  # fmt: skip
        sections += more
        files += written
    markdown = "# Statistics\n\n" + "\n".join(section_markdown(s, out_dir) for s in sections)
    return StatisticsOutput(markdown, sections, files)
