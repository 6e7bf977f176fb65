"""Tests over blocks (Friedman, Nemenyi CD, Holm against a control, IQM) and within blocks (seed-
paired t), the CD diagram, and the statistics entry point; on frames and arrays made here."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text
from scipy import stats

import bench.report.cd_diagram as cd_module
from bench.report.block_scores import block_means
from bench.report.bootstrap import iqm, iqm_table
from bench.report.cd_diagram import draw_cd_diagram, write_cd_diagram
from bench.report.seed_tests import paired_within_blocks
from bench.report.stat_text import marked
from bench.report.statistics import statistics_report
from bench.report.tests_across import (
    cliques,
    critical_difference,
    friedman_from_ranks,
    friedman_test,
)


def row(dataset: str, method: str, seed: int, primary: float, **extra: Any) -> dict[str, Any]:
    return {"run_id": f"{dataset}-{method}-{seed}", "status": "ok", "dataset": dataset,
            "method": method, "seed": seed, "shots": None, "split_seed": 0, "backbone": "vit_t",
            "setting": f"{dataset}/{method}", "primary_metric": "accuracy", "primary": primary,
            "demo": False, **extra}  # fmt: skip


def grid(scores: dict[str, list[float]], seeds: int = 1) -> pd.DataFrame:
    """Blocks B0.. with each method's score per block (fraction); every seed the same."""
    return pd.DataFrame([row(f"B{b}", m, s, v) for m, vs in scores.items()
                         for b, v in enumerate(vs) for s in range(seeds)])  # fmt: skip


def text_boxes_disjoint(fig: Any) -> bool:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(Text) if t.get_text() and t.get_visible()]
    boxes = [t.get_window_extent(renderer) for t in texts]
    return not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


# --------------------------------------------------------------------------- Friedman, CD, Holm


def test_friedman_matches_demsar_worked_example() -> None:
    # Demšar (2006), section 3.2.2: mean ranks of four C4.5 variants over 14 data sets
    chi2, ff, p = friedman_from_ranks(np.array([3.143, 2.000, 2.893, 1.964]), 14)
    assert chi2 == pytest.approx(9.28, abs=0.01)
    assert ff == pytest.approx(3.69, abs=0.01)
    assert p == pytest.approx(stats.f.sf(ff, 3, 39))
    assert p < 0.05  # Demšar: the critical F(3, 39) at 0.05 is 2.85


def test_critical_difference_k4_n14_is_demsars_1_253() -> None:
    assert critical_difference(4, 14) == pytest.approx(2.569 * math.sqrt(20 / 84), abs=1e-3)
    assert critical_difference(4, 14) == pytest.approx(1.253, abs=1e-3)


def test_friedman_3x3_by_hand_and_against_scipy_without_ties() -> None:
    # ranks (1 = best): B0 a1 b2 c3 | B1 a1 b3 c2 | B2 a2 b1 c3 -> R = 4/3, 2, 8/3
    df = grid({"a": [0.9, 0.8, 0.7], "b": [0.8, 0.6, 0.75], "c": [0.7, 0.7, 0.6]})
    out = friedman_test(block_means(df), "c")
    assert out.reason == ""
    assert out.ranks.to_dict() == pytest.approx({"a": 4 / 3, "b": 2.0, "c": 8 / 3})
    # 12*3/(3*4) * (16/9 + 4 + 64/9 - 12) = 3 * 8/9
    assert out.chi2 == pytest.approx(8 / 3)
    scipy_chi2 = stats.friedmanchisquare([0.9, 0.8, 0.7], [0.8, 0.6, 0.75], [0.7, 0.7, 0.6])
    assert out.chi2 == pytest.approx(scipy_chi2.statistic)  # no ties: the same statistic
    # F = 2 * (8/3) / (3*2 - 8/3) = 1.6 on (2, 4) df
    assert out.f == pytest.approx(1.6) and out.p == pytest.approx(stats.f.sf(1.6, 2, 4))
    # against the control c: z = (R - 8/3) / sqrt(3*4/18); Holm over the two
    se = math.sqrt(12 / 18)
    vs = out.vs_control.set_index("method")
    assert vs.loc["a", "z"] == pytest.approx((4 / 3 - 8 / 3) / se)
    pa, pb = 2 * stats.norm.sf(abs(-4 / 3 / se)), 2 * stats.norm.sf(abs(-2 / 3 / se))
    assert vs.loc["a", "p_holm"] == pytest.approx(2 * pa)
    assert vs.loc["b", "p_holm"] == pytest.approx(max(pb, 2 * pa))


def test_incomplete_blocks_are_left_out_and_too_few_say_why() -> None:
    df = grid({"a": [0.9, 0.8, 0.7], "b": [0.8, 0.6, 0.75], "c": [0.7, 0.7, 0.6]})
    df = df[~((df["dataset"] == "B2") & (df["method"] == "c"))]
    out = friedman_test(block_means(df), "a")
    assert out.blocks == ["B0 · vit_t", "B1 · vit_t"]
    assert out.excluded == ["B2 · vit_t: c (not run)"]
    two = friedman_test(block_means(grid({"a": [0.9, 0.8], "b": [0.8, 0.6]})), "a")
    assert two.reason == "2 method(s) with a score in every block kept; the test needs 3"
    assert math.isnan(two.p)
    one = friedman_test(block_means(grid({"a": [0.9], "b": [0.8], "c": [0.7]})), "a")
    assert one.reason == "1 complete block(s); the test needs 2"


def test_cliques_join_methods_closer_than_cd() -> None:
    r = pd.Series({"a": 1.0, "b": 1.5, "c": 2.4, "d": 3.9})
    assert cliques(r, 1.0) == [["a", "b"], ["b", "c"]]
    assert cliques(r, 5.0) == [["a", "b", "c", "d"]]
    assert cliques(r, 0.1) == []


def test_cd_diagram_labels_never_overlap_and_files_are_written(tmp_path, monkeypatch) -> None:
    names = ["full", "lora", "linear", "vpt", "fpt_plus (tuned, budget 20)", "ept", "bitfit"]
    ranks = pd.Series(dict(zip(names, [1.8, 2.1, 4.6, 3.2, 2.4, 5.1, 4.9], strict=True)))
    assert text_boxes_disjoint(draw_cd_diagram(ranks, 1.6, title="Mean rank over 14 blocks"))
    seen = []

    def spy(fig: Any, out_dir: Path, stem: str, *, demo: bool = False) -> list[Path]:
        seen.append(text_boxes_disjoint(fig))
        return real(fig, out_dir, stem, demo=demo)

    real = cd_module.save_figure
    monkeypatch.setattr(cd_module, "save_figure", spy)
    df = grid({m: list(np.linspace(0.5, 0.9, 4) + 0.01 * i) for i, m in enumerate(names)})
    files = write_cd_diagram(friedman_test(block_means(df), "full"), tmp_path)
    assert [f.name for f in files] == ["cd-diagram.png", "cd-diagram.pdf"]
    assert all(f.stat().st_size > 0 for f in files) and seen == [True]


# --------------------------------------------------------------------------- within blocks


def test_seed_paired_t_per_block_with_holm() -> None:
    rows = []
    for s, (base, a, b) in enumerate([(50, 52, 49), (60, 61, 62), (55, 58, 55)]):
        rows += [row("X", "linear", s, base / 100), row("X", "a", s, a / 100),
                 row("X", "b", s, b / 100)]  # fmt: skip
    rows += [row("Y", "linear", s, 0.5) for s in range(2)] + [row("Y", "a", 0, 0.6)]
    out = paired_within_blocks(pd.DataFrame(rows), "linear").set_index(["block", "method"])
    a, b = out.loc[("X · vit_t", "a")], out.loc[("X · vit_t", "b")]
    assert a["n_seeds"] == 3 and a["mean_diff"] == pytest.approx(2.0)  # 2, 1, 3
    assert a["p"] == pytest.approx(stats.ttest_1samp([2, 1, 3], 0).pvalue)
    assert b["p"] == pytest.approx(stats.ttest_1samp([-1, 2, 0], 0).pvalue)
    assert a["p"] < b["p"]  # Holm: 2 * the smaller, then max(the larger, that)
    assert a["p_holm"] == pytest.approx(2 * a["p"])
    assert b["p_holm"] == pytest.approx(max(b["p"], 2 * a["p"]))
    y = out.loc[("Y · vit_t", "a")]
    assert y["n_seeds"] == 1 and math.isnan(y["p"])
    assert y["note"] == "1 paired seed(s); the test needs 3"


# --------------------------------------------------------------------------- IQM


def test_iqm_hand_value_and_stratified_bootstrap() -> None:
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert iqm([0, 1, 1, 1, 100]) == pytest.approx(1.0)  # the outlier is cut
    # baseline 50 and 60 on every run; a's runs give gains 1..4 and 5..8 pp
    rows = [row(d, "linear", s, base) for d, base in (("P", 0.5), ("Q", 0.6)) for s in range(4)]
    rows += [row("P", "a", s, 0.5 + (s + 1) / 100) for s in range(4)]
    rows += [row("Q", "a", s, 0.6 + (s + 5) / 100) for s in range(4)]
    df = pd.DataFrame(rows)
    table, over = iqm_table(df, block_means(df), "linear", n_boot=500, seed=1)
    a = table.set_index("method").loc["a"]
    assert a["iqm"] == pytest.approx(4.5) and (a["n_blocks"], a["n_runs"]) == (2, 8)
    assert a["ci_lo"] <= 4.5 <= a["ci_hi"]
    # stratified: every replicate keeps 4 runs of each block, so its middle half holds at least
    # two of P's gains (>= 1) and two of Q's (>= 5): IQM >= 3, and likewise <= 6. Resampling the
    # 8 runs unstratified could draw P's four only (IQM down to 1).
    assert a["ci_lo"] >= 3.0 and a["ci_hi"] <= 6.0
    again, _ = iqm_table(df, block_means(df), "linear", n_boot=500, seed=1)
    assert again.equals(table)
    assert "stratified" in over and "within each block" in over


# --------------------------------------------------------------------------- entry point


def test_statistics_report_without_predictions_says_what_is_missing(tmp_path) -> None:
    df = grid({"full": [0.9, 0.8, 0.85], "lora": [0.88, 0.79, 0.86], "linear": [0.7, 0.6, 0.65]},
              seeds=2)  # fmt: skip
    out = statistics_report(df, "linear", tmp_path, n_boot=200)
    headings = [s["heading"] for s in out.sections]
    assert headings[0] == "Methods over blocks: Friedman test and critical difference"
    assert all(out.markdown.count(f"## {h}\n") == 1 for h in headings)
    for s in out.sections:
        assert out.markdown.count(s["intro"]) == 1  # each paragraph once
        for _, table, *_ranks in s["tables"]:
            assert len(table.columns) <= 8
    wil = next(s for s in out.sections if "Wilcoxon" in s["heading"])
    assert wil["tables"] == [] and "No test: at most 3 block(s)" in wil["notes"][0]
    assert "none were read" in out.sections[-1]["intro"]
    assert (tmp_path / "figures" / "cd-diagram.png") in out.files
    assert "![Methods over blocks" in out.markdown and "(figures/cd-diagram.png)" in out.markdown


def test_marked_marks_best_and_second_per_block_as_shown() -> None:
    """Statistics tables mark their best values as the score tables do: per block, on the
    numbers shown (2.04 and 2.0 shown as "2.0" tie)."""
    frame = pd.DataFrame({"block": ["A", "A", "A", "B", "B"], "method": list("xyzxy"),
                          "score": ["1.0", "3.0", "—", "2.0", "2.0"]})  # fmt: skip
    caption, same, ranks = marked("c", frame, "score")
    assert caption == "c" and same is frame
    assert ranks["score"].tolist() == [2, 1, 0, 1, 1] and ranks["method"].eq(0).all()
    _, _, low = marked("c", frame.drop(columns="block"), "score", lower_better=True)
    assert low["score"].tolist() == [1, 0, 0, 2, 2]
