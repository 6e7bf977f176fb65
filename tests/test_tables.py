"""Golden tests for bench.report.stats, .tables and .efficiency on long frames written by hand."""

from __future__ import annotations

import io
import math
import re
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.report.efficiency import (
    COMPOSITE_DEFINITIONS,
    efficiency_display,
    efficiency_table,
)
from bench.report.formats import latex_escape, to_csv, to_latex, to_markdown
from bench.report.stats import (
    average_ranks,
    holm,
    mean_interval,
    paired_vs_baseline,
    pareto_front,
    pme,
    ppe,
    ppt,
)
from bench.report.tables import score_table, wide_table


def run(
    dataset: str,
    method: str,
    seed: int,
    primary: float | None = None,
    *,
    status: str = "ok",
    shots: int | None = None,
    setting: str | None = None,
    metric: str = "accuracy",
    **extra: Any,
) -> dict[str, Any]:
    """One row of the long frame (`bench.report.frame.records_frame`), only the fields tables read."""
    row = {
        "run_id": f"{dataset}-{method}-{shots}-{seed}-{setting}",
        "status": status,
        "error": None if status == "ok" else f"{status} on purpose",
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "shots": shots,
        "split_seed": 0,
        "backbone": "vit_t",
        "setting": setting or f"{dataset}/{shots}/{method}",
        "primary_metric": metric,
        "primary": primary if status == "ok" else math.nan,
    }
    row.update(extra)
    return row


def frame(*rows: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def reference_ci(x: list[float]) -> tuple[float, float]:
    """The 95 % t interval written out: mean ± t(0.975, n - 1) · s / sqrt(n)."""
    a = np.asarray(x, dtype=float)
    half = stats.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / np.sqrt(a.size)
    return float(a.mean() - half), float(a.mean() + half)


# --------------------------------------------------------------------------- mean, std, CI


def test_score_table_mean_std_ci_by_hand() -> None:
    df = frame(
        *(run("ChestDR", "full", s, v, shots=1) for s, v in enumerate([0.80, 0.82, 0.84])),
        run("ChestDR", "lora", 0, 0.70, shots=1),
        run("ChestDR", "lora", 1, 0.80, shots=1),
        run("ChestDR", "lora", 2, status="failed", shots=1),
    )
    t = score_table(df).set_index("method")
    full, lora = t.loc["full"], t.loc["lora"]

    assert full["block"] == "ChestDR 1-shot · vit_t"
    assert full["shots"] == 1 and full["metric"] == "accuracy"
    assert (full["n_ok"], full["n_total"], full["n_scored"], full["status"]) == (3, 3, 3, "3 ok")
    assert full["mean"] == pytest.approx(82.0)
    # sample std: sqrt((2^2 + 0 + 2^2) / 2) = 2
    assert full["std"] == pytest.approx(2.0)
    assert (full["ci_lo"], full["ci_hi"]) == pytest.approx(reference_ci([80.0, 82.0, 84.0]))
    # 82 ± t(0.975, 2) · 2 / sqrt(3) = 82 ± 4.9683: wider than the runs' range, as it must be
    assert (full["ci_lo"], full["ci_hi"]) == pytest.approx((77.0317, 86.9683), abs=1e-4)

    # The failed run is counted, not averaged: mean and std over the two finished runs.
    assert (lora["n_ok"], lora["n_total"], lora["status"]) == (2, 3, "2 ok, 1 failed")
    assert lora["mean"] == pytest.approx(75.0)
    assert lora["std"] == pytest.approx(math.sqrt(50.0))
    # two runs: 75 ± t(0.975, 1) · sqrt(50) / sqrt(2) = 75 ± 12.706 · 5, honestly wide
    assert (lora["ci_lo"], lora["ci_hi"]) == pytest.approx((11.469, 138.531), abs=1e-3)


def test_score_table_single_run_and_all_failed() -> None:
    df = frame(
        run("Derm", "vpt", 0, 0.5),
        *(run("Derm", "fpt_plus", s, status="oom") for s in range(2)),
    )
    t = score_table(df).set_index("method")
    assert t.loc["vpt", "mean"] == pytest.approx(50.0)
    assert math.isnan(t.loc["vpt", "std"]) and math.isnan(t.loc["vpt", "ci_lo"])
    assert pd.isna(t.loc["vpt", "shots"])  # full data
    assert t.loc["fpt_plus", "status"] == "2 oom" and t.loc["fpt_plus", "n_ok"] == 0
    assert math.isnan(t.loc["fpt_plus", "mean"])


def test_mean_interval_cases() -> None:
    # the seeds a percentile bootstrap reported as 79.9-83.5 (their min-max)
    lo, hi = mean_interval([81.2, 83.5, 79.9])
    assert (round(lo, 1), round(hi, 1)) == (77.0, 86.1)
    # hand-computed: mean 2, s = 1, t(0.975, 2) = 4.3027 -> 2 ± 4.3027 / sqrt(3)
    assert mean_interval([1.0, 2.0, 3.0]) == pytest.approx((2 - 2.48418, 2 + 2.48418), abs=1e-4)
    assert mean_interval([0.5, 0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert all(math.isnan(v) for v in mean_interval([1.0, math.nan]))
    assert all(math.isnan(v) for v in mean_interval([]))
    x = [71.2, 68.4, 75.0, 70.1, 69.9, 73.3, 72.8]
    assert mean_interval(x) == pytest.approx(reference_ci(x))
    assert mean_interval([*x, math.nan]) == mean_interval(x)  # NaNs are dropped
    lo50, hi50 = mean_interval(x, level=0.5)
    lo95, hi95 = mean_interval(x)
    assert lo95 < lo50 < np.mean(x) < hi50 < hi95


# --------------------------------------------------------------------------- composites, Pareto


def test_composite_scores_hand_values() -> None:
    # PPT with P = 1e7: exp(-log10(1 + 1)) = exp(-log10 2)
    assert ppt(80.0, 1e7) == pytest.approx(80.0 * math.exp(-math.log10(2.0)))
    assert ppt(80.0, 0) == pytest.approx(80.0)
    assert ppt(80.0, 9e7) == pytest.approx(80.0 * math.exp(-1.0))  # log10(10) = 1
    # PPE with r = 1% = 0.01
    assert ppe(80.0, 0.01) == pytest.approx(80.0 * math.exp(-math.log10(1.01)))
    assert ppe(80.0, 1.0) == pytest.approx(80.0 * math.exp(-math.log10(2.0)))
    # PME: half of full fine-tuning's memory; full itself gets exp(-log10 2)
    assert pme(80.0, 500.0, 1000.0) == pytest.approx(80.0 * math.exp(-math.log10(1.5)))
    assert pme(80.0, 1000.0, 1000.0) == pytest.approx(80.0 * math.exp(-math.log10(2.0)))
    vec = ppt(np.array([80.0, 60.0]), np.array([0.0, 9e7]))
    assert vec == pytest.approx([80.0, 60.0 * math.exp(-1.0)])


def test_pareto_front_dominated_ties_nan() -> None:
    cost = [1.0, 2.0, 2.0, 3.0, math.nan, 1.0, 2.0, 0.5]
    score = [50.0, 60.0, 60.0, 55.0, 99.0, 50.0, 58.0, math.nan]
    front = pareto_front(cost, score)
    # 0 and 5 identical (both kept); 1 and 2 identical (both kept); 3 dominated by 1 (cheaper and
    # better); 6 dominated by 1 (same cost, lower score); NaN cost or score never on the front.
    assert front.tolist() == [True, True, True, False, False, True, False, False]
    assert front.dtype == bool


# --------------------------------------------------------------------------- paired tests


def paired_frame() -> pd.DataFrame:
    """Six blocks (DS1..DS6), two seeds each; a block's difference is the mean over its seeds."""
    rows = []
    # block-mean differences (pp):  a: +1..+6  |  b: +1..+5, -6  |  c: 3 blocks  |  d: all zero
    diffs_a = [1, 2, 3, 4, 5, 6]
    diffs_b = [1, 2, 3, 4, 5, -6]
    for i in range(6):
        ds, base = f"DS{i + 1}", 0.40 + 0.02 * i
        for s, jitter in enumerate((-0.01, 0.01)):  # seeds differ; their mean is the block's
            rows.append(run(ds, "linear", s, base, ece=0.10))
            rows.append(run(ds, "a", s, base + diffs_a[i] / 100 + jitter, ece=0.05))
            rows.append(run(ds, "b", s, base + diffs_b[i] / 100 - jitter))
            rows.append(run(ds, "d", s, base))
            if i < 3:
                rows.append(run(ds, "c", s, base + 0.01))
    # a block where a failed and the baseline finished: no pair, but counted as unpaired
    rows.append(run("DS7", "linear", 0, 0.5, ece=0.10))
    rows.append(run("DS7", "a", 0, status="failed"))
    return frame(*rows)


def test_wilcoxon_over_block_means_exact_p_and_holm() -> None:
    out = paired_vs_baseline(paired_frame(), "linear").set_index("method")
    assert set(out.index) == {"a", "b", "c", "d"}
    a, b = out.loc["a"], out.loc["b"]
    # 12 (seed) pairs, but 6 blocks: n counts blocks
    assert (a["n_blocks"], a["n_unpaired"]) == (6, 1)
    assert (a["wins"], a["ties"], a["losses"]) == (6, 0, 0)
    assert a["median_diff"] == pytest.approx(3.5)
    # all six differences positive: exact two-sided p = 2 / 2^6
    assert a["p"] == pytest.approx(2 / 64)
    # b: W- = 6; subsets of {1..6} with rank sum <= 6: 14 -> p = 2 * 14 / 64
    assert (b["wins"], b["ties"], b["losses"]) == (5, 0, 1)
    assert b["median_diff"] == pytest.approx(2.5)
    assert b["p"] == pytest.approx(28 / 64)
    # Holm over the 2 methods tested (c and d have no test): 2 * 0.03125, then max(0.4375, .)
    assert a["p_holm"] == pytest.approx(0.0625)
    assert b["p_holm"] == pytest.approx(0.4375)
    assert a["note"] == "" and b["note"] == ""


def test_too_few_blocks_and_all_zero_notes() -> None:
    out = paired_vs_baseline(paired_frame(), "linear").set_index("method")
    c, d = out.loc["c"], out.loc["d"]
    assert c["n_blocks"] == 3
    assert c["note"] == "3 block(s); a test needs 6 (with 5 the smallest p is 0.0625)"
    assert math.isnan(c["p"]) and math.isnan(c["p_holm"])
    assert (d["n_blocks"], d["ties"]) == (6, 6)
    assert "all differences are zero" in d["note"] and math.isnan(d["p"])
    with pytest.raises(ValueError, match="baseline"):
        paired_vs_baseline(paired_frame(), "nonexistent")


def test_one_block_of_ten_seeds_is_one_pair_not_ten() -> None:
    df = frame(*(r for s in range(10)
                 for r in (run("X", "linear", s, 0.5), run("X", "a", s, 0.6 + s / 1000))))  # fmt: skip
    a = paired_vs_baseline(df, "linear").set_index("method").loc["a"]
    assert a["n_blocks"] == 1 and a["wins"] == 1
    assert a["median_diff"] == pytest.approx(10.45)
    assert math.isnan(a["p"]) and a["note"].startswith("1 block(s); a test needs 6")


def test_paired_lower_is_better_counts_lower_as_win() -> None:
    out = paired_vs_baseline(paired_frame(), "linear", metric="ece").set_index("method")
    # a's ece 5% against the baseline's 10%: a gain of 5 points in every block
    assert out.loc["a", "wins"] == 6 and out.loc["a", "median_diff"] == pytest.approx(5.0)


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, 2*0.03, max(1*0.04, 0.06)
    assert holm([0.01, 0.04, 0.03, math.nan])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([0.01, 0.04, 0.03, math.nan])[3])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1


# --------------------------------------------------------------------------- average ranks


def ranks_frame() -> pd.DataFrame:
    return frame(
        # X: a mean 85, b 85 (tie), c mean 84.5 even though its first seed is the best run
        run("X", "a", 0, 0.80, ece=0.05),
        run("X", "a", 1, 0.90, ece=0.05),
        run("X", "b", 0, 0.85, ece=0.05),
        run("X", "c", 0, 0.99, ece=0.01),
        run("X", "c", 1, 0.70, ece=0.01),
        # Y: b beats a; c failed
        run("Y", "a", 0, 0.60, ece=0.02),
        run("Y", "b", 0, 0.70, ece=0.10),
        run("Y", "c", 0, status="failed"),
        # Z 5-shot: a beats d; b and c not run
        run("Z", "a", 0, 0.50, shots=5, ece=0.03),
        run("Z", "d", 0, 0.40, shots=5, ece=0.01),
    )


def test_average_ranks_ties_and_missing() -> None:
    r = average_ranks(ranks_frame()).set_index("method")
    # a: X 1.5, Y 2, Z 1 -> 1.5 | b: X 1.5, Y 1 -> 1.25 | c: X 3 | d: Z 2
    assert r["mean_rank"].to_dict() == pytest.approx({"a": 1.5, "b": 1.25, "c": 3.0, "d": 2.0})
    assert r["n_blocks"].to_dict() == {"a": 3, "b": 2, "c": 1, "d": 1}
    assert list(r.index) == ["b", "a", "d", "c"]  # sorted by mean rank
    assert r.loc["c", "not_ranked_in"] == "Y · vit_t (failed); Z 5-shot · vit_t (not run)"
    assert r.loc["b", "not_ranked_in"] == "Z 5-shot · vit_t (not run)"
    assert r.loc["a", "not_ranked_in"] == ""


def test_average_ranks_lower_is_better() -> None:
    r = average_ranks(ranks_frame(), metric="ece").set_index("method")
    # X: c 1 (1%), a and b tie at 5% -> 2.5 | Y: a 1 (2%), b 2 | Z: d 1, a 2
    assert r["mean_rank"].to_dict() == pytest.approx(
        {"a": (2.5 + 1 + 2) / 3, "b": (2.5 + 2) / 2, "c": 1.0, "d": 1.0}
    )


# --------------------------------------------------------------------------- wide table


def wide_frame() -> pd.DataFrame:
    rows = []
    for s, (f1, f5, p1, p5) in enumerate(
        [(0.80, 0.60, 0.85, 0.70), (0.82, 0.62, 0.87, 0.70), (0.84, 0.64, 0.89, 0.70)]
    ):
        rows += [
            run("ChestDR", "full", s, f1, shots=1),
            run("ChestDR", "full", s, f5, shots=5),
            run("ChestDR", "fpt_plus", s, p1, shots=1),
            run("ChestDR", "fpt_plus", s, p5, shots=5),
            run("ChestDR", "vpt", s, 0.50, shots=1),
            run("ChestDR", "vpt", s, status="failed", shots=5),
        ]
    rows += [  # lora: one of two runs finished in 1-shot, never run in 5-shot
        run("ChestDR", "lora", 0, 0.84, shots=1),
        run("ChestDR", "lora", 1, status="diverged", shots=1),
    ]
    return frame(*rows)


def test_wide_table_cells_marks_average_and_footnotes() -> None:
    table = wide_table(score_table(wide_frame()))
    f = table.frame.set_index("method")
    r = table.ranks.assign(method=table.frame["method"]).set_index("method")
    assert list(table.frame.columns) == ["method", "ChestDR 1-shot", "ChestDR 5-shot", "Average"]
    assert list(f.index) == ["full", "fpt_plus", "vpt", "lora"]

    lo, hi = reference_ci([80.0, 82.0, 84.0])
    assert f.loc["full", "ChestDR 1-shot"] == f"82.00 ± 2.00 [{lo:.2f}, {hi:.2f}]"
    lo, hi = reference_ci([85.0, 87.0, 89.0])
    assert f.loc["fpt_plus", "ChestDR 1-shot"] == f"87.00 ± 2.00 [{lo:.2f}, {hi:.2f}]"
    assert f.loc["fpt_plus", "ChestDR 5-shot"] == "70.00 ± 0.00 [70.00, 70.00]"
    assert f.loc["lora", "ChestDR 1-shot"] == "84.00 (1/2)"  # one run: no std, no interval
    assert "[95 % t interval of the mean over those runs" in table.footnotes[0]
    plain = wide_table(score_table(wide_frame()), ci=False).frame.set_index("method")
    assert plain.loc["full", "ChestDR 1-shot"] == "82.00 ± 2.00"
    assert f.loc["vpt", "ChestDR 5-shot"] == "failed"
    assert f.loc["lora", "ChestDR 5-shot"] == "not run"

    # 1-shot: fpt_plus 87 best, lora 84 second, full 82 unmarked; 5-shot: fpt_plus, then full
    assert r["ChestDR 1-shot"].to_dict() == {"full": 0, "fpt_plus": 1, "vpt": 0, "lora": 2}
    assert r["ChestDR 5-shot"].to_dict() == {"full": 2, "fpt_plus": 1, "vpt": 0, "lora": 0}

    # Average only for methods with a score in every block
    assert f["Average"].to_dict() == {"full": "72.00", "fpt_plus": "78.50", "vpt": "—", "lora": "—"}
    assert r["Average"].to_dict() == {"full": 2, "fpt_plus": 1, "vpt": 0, "lora": 0}

    notes = table.footnotes
    assert "Not run: lora in ChestDR 5-shot." in notes
    assert "No finished run: vpt in ChestDR 5-shot (3 failed)." in notes
    assert (
        "(k/n): the score is over k of n runs: lora in ChestDR 1-shot (1 ok, 1 diverged)." in notes
    )
    avg = next(n for n in notes if n.startswith("Average"))
    assert "vpt (ChestDR 5-shot: failed)" in avg and "lora (ChestDR 5-shot: not run)" in avg
    assert "accuracy (ChestDR 1-shot, ChestDR 5-shot)" in notes[0]


def test_wide_table_ties_share_the_mark_on_rounded_values() -> None:
    # 80.001 and 80.004 both show 80.00: both best, and after a tie for best there is no second
    df = frame(run("D", "a", 0, 0.80001), run("D", "b", 0, 0.80004), run("D", "c", 0, 0.70))
    table = wide_table(score_table(df))
    marks = table.ranks.assign(method=table.frame["method"]).set_index("method")
    assert marks["D"].to_dict() == {"a": 1, "b": 1, "c": 0}
    assert "Average" not in table.frame.columns  # a single block has no average


def test_wide_table_keeps_settings_apart() -> None:
    df = frame(
        run("D", "lora", 0, 0.80, setting="s1"),
        run("D", "lora", 0, 0.60, setting="s2"),
        run("D", "full", 0, 0.70),
    )
    f = wide_table(score_table(df)).frame.set_index("method")
    assert f["D"].to_dict() == {"lora [s1]": "80.00", "lora [s2]": "60.00", "full": "70.00"}


# --------------------------------------------------------------------------- renderers


def check_braces(text: str) -> None:
    depth = 0
    for ch in text.replace(r"\{", "").replace(r"\}", ""):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0, "closing brace without an opening one"
    assert depth == 0


def test_latex_structure_escaping_and_marks() -> None:
    df = wide_frame()
    df.loc[df["method"] == "lora", "method"] = "lora_50%"
    table = wide_table(score_table(df), ci=False)
    tex = to_latex(
        table.frame,
        caption="Few-shot accuracy (50% & more_data)",
        label="tab:scores",
        ranks=table.ranks,
        footnotes=table.footnotes,
    )
    check_braces(tex)
    lines = tex.splitlines()
    n_cols = table.frame.shape[1]
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex)
    assert spec is not None and len(spec.group(1)) == n_cols == 4
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert lines.count(rule) == 1
    rows = lines[lines.index(r"\toprule") + 1 : lines.index(r"\bottomrule")]
    rows = [x for x in rows if x != r"\midrule"]
    assert len(rows) == 1 + len(table.frame)  # header + one line per method
    for row in rows:
        assert len(re.findall(r"(?<!\\)&", row)) == n_cols - 1
        assert row.endswith(r" \\")
    # every special character escaped, everywhere (caption, cells, footnotes): once the column
    # separators and the math for ± are taken out, no bare _ % # & $ is left
    bare = tex.replace(" & ", " ").replace(r"$\pm$", "")
    assert not re.search(r"(?<!\\)[_%#&$]", bare)
    assert r"fpt\_plus" in tex and r"lora\_50\%" in tex
    assert r"\caption{Few-shot accuracy (50\% \& more\_data)}" in tex
    assert r"\textbf{87.00 $\pm$ 2.00}" in tex
    assert r"\underline{84.00 (1/2)}" in tex
    assert "±" not in tex and "—" not in tex
    # footnotes after the tabular, inside the table
    end_tab, end_table = lines.index(r"\end{tabular}"), lines.index(r"\end{table}")
    assert any("Not run: lora\\_50\\% in ChestDR 5-shot." in x for x in lines[end_tab:end_table])


def test_latex_escape_all_specials() -> None:
    assert latex_escape("a_b%c&d#e$f{g}h~i^j\\k ±") == (
        r"a\_b\%c\&d\#e\$f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k $\pm$"
    )


def test_markdown_marks_and_cells() -> None:
    table = wide_table(score_table(wide_frame()), ci=False)
    md = to_markdown(table.frame, table.ranks)
    lines = md.splitlines()
    assert lines[0].count("|") == 5  # 4 columns
    assert "**87.00 ± 2.00**" in md and "_84.00 (1/2)_" in md and "**78.50**" in md
    assert "not run |" in md and "failed |" in md
    assert "**82.00" not in md  # third in 1-shot: unmarked
    # the method column flush left, every score column flush right
    rule = lines[1].strip("|").split("|")
    assert rule[0].startswith(":-") and rule[0].endswith("-")
    assert all(r.startswith("-") and r.endswith("-:") for r in rule[1:])
    assert lines[2].startswith("| full ") and lines[2].endswith(" _72.00_ |")


def test_csv_has_raw_numbers() -> None:
    text = to_csv(score_table(wide_frame()))
    back = pd.read_csv(io.StringIO(text))
    full1 = back[(back["method"] == "full") & (back["shots"] == 1)].iloc[0]
    assert full1["mean"] == pytest.approx(82.0) and full1["std"] == pytest.approx(2.0)
    assert full1["ci_lo"] == pytest.approx(77.0317, abs=1e-4)  # the t interval, not min-max
    vpt5 = back[(back["method"] == "vpt") & (back["shots"] == 5)].iloc[0]
    assert vpt5["status"] == "3 failed" and math.isnan(vpt5["mean"])
    assert "±" not in text


# --------------------------------------------------------------------------- efficiency


def test_efficiency_table_composites_and_pme_note() -> None:
    cost = {"train_s": 10.0, "train_img_s": 100.0}
    df = frame(
        *(
            run("A", "full", s, 0.80, trainable_params=8e7, trainable_pct=100.0,
                trainable_pct_no_head=99.0, peak_train_mem_mb=1000.0, **cost)
            for s in range(2)
        ),
        *(
            run("A", "lora", s, 0.80, trainable_params=1e7, trainable_pct=1.0,
                trainable_pct_no_head=0.5, peak_train_mem_mb=500.0 + 100 * s,
                peak_preload_mem_mb=50.0, **cost)
            for s in range(2)
        ),
        run("B", "lora", 0, 0.60, trainable_params=1e7, trainable_pct=1.0,
            trainable_pct_no_head=0.5, peak_train_mem_mb=500.0, **cost),
        run("B", "vpt", 0, status="oom", trainable_params=2e5, trainable_pct=0.2,
            trainable_pct_no_head=0.1),
    )  # fmt: skip
    e = efficiency_table(df).set_index(["dataset", "method"])
    lora = e.loc[("A", "lora")]
    assert lora["trainable_params"] == 10_000_000
    assert (lora["trainable_pct"], lora["trainable_pct_no_head"]) == (1.0, 0.5)
    assert lora["peak_train_mem_mb"] == pytest.approx(550.0)  # mean over the two runs
    assert lora["score"] == pytest.approx(80.0)
    assert lora["ppt"] == pytest.approx(80.0 * math.exp(-math.log10(2.0)))
    assert lora["ppe"] == pytest.approx(80.0 * math.exp(-math.log10(1.01)))
    assert lora["pme"] == pytest.approx(80.0 * math.exp(-math.log10(1.55)))
    assert e.loc[("A", "full"), "pme"] == pytest.approx(80.0 * math.exp(-math.log10(2.0)))
    # block B has no full fine-tuning: PME NaN, and said why
    assert math.isnan(e.loc[("B", "lora"), "pme"])
    assert e.loc[("B", "lora"), "note"] == "PME: no full fine-tuning run in this block"
    assert e.loc[("B", "vpt"), "trainable_params"] == 200_000  # known although it went OOM

    shown = efficiency_display(efficiency_table(df))
    f, r = shown.frame, shown.ranks
    assert "preload MB" in f.columns and "eval MB" not in f.columns
    assert f.loc[3, "method"] == "vpt" and f.loc[3, "score"] == "oom"
    assert f.loc[1, "params"] == "10,000,000"
    # per block: in A, lora's PPT beats full's; in B, lora is alone with a score
    assert (r.loc[0, "PPT"], r.loc[1, "PPT"]) == (2, 1)
    assert (r.loc[2, "score"], r.loc[3, "score"]) == (1, 0)
    # costs: lowest best per block (lora's params and memory in A; vpt's params in B, where the
    # OOM run has no memory), img/s all tied in A: unmarked
    assert (r.loc[0, "params"], r.loc[1, "params"]) == (2, 1)
    assert (r.loc[0, "train MB"], r.loc[1, "train MB"]) == (2, 1)
    assert (r.loc[2, "params"], r.loc[3, "params"]) == (2, 1)
    assert (r.loc[0, "img/s"], r.loc[1, "img/s"]) == (0, 0)
    assert COMPOSITE_DEFINITIONS in shown.footnotes[0]
    assert "PME: no full fine-tuning run in this block: B · vit_t / lora, B · vit_t / vpt." in (
        shown.footnotes
    )
    assert any("eval" in n for n in shown.footnotes)
    check_braces(to_latex(f, caption="Cost", label="tab:cost", ranks=r, footnotes=shown.footnotes))


def test_footnote_states_formulas_and_sources() -> None:
    for piece in (
        "exp(-log10(P / 1e7 + 1))",
        "exp(-log10(r + 1))",
        "exp(-log10(m / m_full + 1))",
        "V-PETL Bench",
        "FPT, Huang et al., MICCAI 2024",
    ):
        assert piece in COMPOSITE_DEFINITIONS


def test_latex_column_groups_span_the_table() -> None:
    f = pd.DataFrame({"method": ["a"], "x paper": ["1"], "x ours": ["2"]})
    tex = to_latex(f, caption="c", label="t", groups=[("", 1), ("x_1", 2)])
    header = tex.split("\\toprule\n", 1)[1].splitlines()[0]
    assert header == r" & \multicolumn{2}{c}{x\_1} \\ \cmidrule(lr){2-3}"
    with pytest.raises(ValueError, match="do not span the table's 3 columns"):
        to_latex(f, caption="c", label="t", groups=[("x", 2)])


def test_the_report_never_imports_torch() -> None:
    """`bench report` reads JSON records only: a laptop without torch (or a login node) can
    render every table and figure, and the report starts fast."""
    code = (
        "import sys\n"
        "import bench.metric_table, bench.report, bench.report.plots, bench.report.html\n"
        "import bench.report.names, bench.report.frame, bench.report.summary, bench.report.write\n"
        "import bench.report.tables, bench.report.efficiency, bench.report.formats\n"
        "import bench.report.stats, bench.report.paper, bench.report.tuning\n"
        "import bench.report.profile, bench.report.missing, bench.report.filters\n"
        "import bench.report.conditions, bench.report.statistics\n"
        "print(sorted(m for m in ('torch', 'timm', 'peft') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_block_summary_marks_best_score_and_lowest_costs() -> None:
    """The per-block summary marks its best values as the score tables do: the score and img/s
    highest, ECE and costs lowest, on the numbers shown; a column all tied is left alone."""
    from bench.report.summary import summary_marks

    table = pd.DataFrame({
        "method": ["full", "lora", "linear"], "runs": ["3 ok"] * 3,
        "auc": ["80.00 ± 1.00", "85.00 ± 2.00", "—"], "acc %": ["70.00", "75.00", "75.00"],
        "ECE %": ["5.00", "3.00", "4.00"], "train mem MB": ["900", "300", "100"],
        "img/s": ["100", "300†", "900"], "train s": ["10.0", "10.0", "10.0"],
    })  # fmt: skip
    r = summary_marks(table).set_index(table["method"])
    assert r["auc"].to_dict() == {"full": 2, "lora": 1, "linear": 0}
    assert r["acc %"].to_dict() == {"full": 0, "lora": 1, "linear": 1}  # a tie for best
    assert r["ECE %"].to_dict() == {"full": 0, "lora": 1, "linear": 2}
    assert r["train mem MB"].to_dict() == {"full": 0, "lora": 2, "linear": 1}
    assert r["img/s"].to_dict() == {"full": 0, "lora": 2, "linear": 1}
    assert not r["train s"].any() and not r["method"].any() and not r["runs"].any()
