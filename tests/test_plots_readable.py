"""Figures a reader can read (bench.report.plots): labels clear of points and of each other,
one style per method everywhere, an honest legend, DEMO stamps, captions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench.report import plots
from bench.report.captions import caption, figure_kind
from bench.report.palette import method_style
from tests.figure_checks import draw_spied
from tests.test_plots import CPU_WORDS, GPU_WORDS, _frame, _row

LONG = "my_hospital_plugin_adapter_with_a_very_long_name_indeed"
LONG_BACKBONE = "vit_base_patch16_224.augreg2_in21k_ft_in1k"


def _clustered() -> pd.DataFrame:
    """One block of eleven methods whose scores and costs nearly coincide, with a tuned row and
    a plugin of a very long name: where labels beside points used to collide."""
    costs = {"full": (100.0, 9100.0, 52.0), "linear": (0.02, 310.0, 0.002),
             "vpt-shallow": (0.05, 5200.0, 35.0), "vpt": (0.6, 5600.0, 36.0),
             "lora": (0.9, 5900.0, 35.0), "ept": (0.8, 5800.0, 35.5),
             "fpt-plus": (1.1, 900.0, 4.0), "ssf": (0.25, 6100.0, 35.2),
             "bitfit": (0.12, 5300.0, 34.9), "lora (tuned, budget 8)": (0.9, 5950.0, 35.0),
             LONG: (2.0, 6000.0, 36.0)}  # fmt: skip
    rows = []
    for i, (method, (pct, mem, gflops)) in enumerate(costs.items()):
        for seed in (0, 1):
            # all within one point; the tuned row ties its method's fixed runs on both axes
            score = 0.76 + 0.0005 * (4 if method.startswith("lora") else i) + 0.004 * seed
            row = _row("lora", seed, None, score, setting=method, run_id=f"{method}-{seed}",
                       trainable_pct=pct, peak_train_mem_mb=mem, train_gflops=gflops,
                       backbone=LONG_BACKBONE)  # fmt: skip
            rows.append({**row, "method": method})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def clustered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return draw_spied(plots, plots.write_plots, _clustered(), tmp_path_factory.mktemp("c"),
                      save=False)  # fmt: skip


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The 3-method, two-block frame of test_plots, drawn without checks or files."""
    out = tmp_path_factory.mktemp("s")
    return draw_spied(plots, plots.write_plots, _frame(), out, save=False, check=False)


def test_clustered_labels_overlap_nothing(clustered: dict[str, Any]) -> None:
    for stem, figure in clustered["seen"].items():
        assert figure["problems"] == [], stem


def test_clustered_block_is_read_from_its_legend(clustered: dict[str, Any]) -> None:
    block = "dermamnist-vit-base-patch16-224-augreg2-in21k-ft-in1k"
    assert sorted(clustered["seen"]) == sorted(
        f"{kind}-{block}"
        for kind in ("score_vs_params", "score_vs_memory", "score_vs_train_flops", "train_time",
                     "reliability")
    )  # fmt: skip
    (ax,) = clustered["seen"][f"score_vs_params-{block}"]["axes"]
    shown = [label.replace("\n", "") for label in ax["legend"]]
    assert len(shown) == 12 and shown[-1] == "Pareto front"
    assert f"{LONG}\xa0·\xa02\xa0seeds" in shown  # wrapped, not cut
    # eleven methods, eleven distinct (colour, marker, fill) in one figure
    assert len({style for label, style in ax["legend"].items() if label != "Pareto front"}) == 11


def test_one_style_per_method_in_every_figure(
    small: dict[str, Any], clustered: dict[str, Any]
) -> None:
    lora = method_style("lora")
    params = small["seen"]["score_vs_params-dermamnist-4-shot-vit-tiny"]["axes"][0]
    assert params["legend"]["lora\xa0·\xa02\xa0seeds"] == (lora.color, lora.marker, lora.color)
    block = "dermamnist-vit-base-patch16-224-augreg2-in21k-ft-in1k"
    many = clustered["seen"][f"score_vs_params-{block}"]["axes"][0]["legend"]
    # the same colour among eleven methods as among three: not a palette of those present
    assert many["lora\xa0·\xa02\xa0seeds"] == params["legend"]["lora\xa0·\xa02\xa0seeds"]
    tuned = many["lora (tuned, budget\n8)\xa0·\xa02\xa0seeds"]
    assert tuned[0] == lora.color and tuned[2] == "white"  # its method's colour, hollow
    time = small["seen"]["train_time-dermamnist-4-shot-vit-tiny"]["axes"][0]
    bars = dict(zip(time["yticks"], time["bars"], strict=True))
    assert bars["lora"] == (lora.color.lower(), lora.color.lower())
    shots = small["seen"]["score_vs_shots-dermamnist-vit-tiny"]["axes"][0]["legend"]
    assert shots["lora\xa0·\xa02\xa0seeds"] == (lora.color, lora.marker, lora.color)


def test_pareto_front_only_when_it_joins_two(tmp_path: Path) -> None:
    # linear is cheaper and better than lora: a front of one point is no line
    rows = [_row("linear", s, 4, 0.8 + 0.01 * s) for s in (0, 1)]
    rows += [_row("lora", s, 4, 0.7) for s in (0, 1)]
    rows += [_row("full", 0, 8, 0.9)]  # the 8-shot block has one method, one seed
    seen = draw_spied(
        plots, plots.write_plots, pd.DataFrame(rows), tmp_path, save=False, check=False
    )["seen"]
    (ax,) = seen["score_vs_params-dermamnist-4-shot-vit-tiny"]["axes"]
    assert "Pareto front" not in ax["lines"]
    assert list(ax["legend"]) == ["linear\xa0·\xa02\xa0seeds", "lora\xa0·\xa02\xa0seeds"]
    (ax,) = seen["score_vs_params-dermamnist-8-shot-vit-tiny"]["axes"]
    assert "Pareto front" not in ax["lines"]
    assert list(ax["legend"]) == ["full\xa0·\xa01\xa0seed"]


def test_demo_figures_are_stamped_per_block(tmp_path: Path) -> None:
    df = _frame()
    df["demo"] = df["shots"] == 8  # real runs at 4 shots, demo runs at 8
    seen = draw_spied(plots, plots.write_plots, df, tmp_path, save=False, check=False)["seen"]
    demo = {stem: figure["demo"] for stem, figure in seen.items()}
    assert demo == {
        stem: "8-shot" in stem or stem.startswith("score_vs_shots") for stem in demo
    }  # the shots figure shows both blocks
    assert not demo["score_vs_params-dermamnist-4-shot-vit-tiny"]


def test_memory_axis_says_what_was_measured(tmp_path: Path) -> None:
    rows = [_row("linear", s, None, 0.6, memory_source=CPU_WORDS) for s in (0, 1)]
    rows += [_row("lora", s, None, 0.7) for s in (0, 1)]  # GPU_WORDS
    seen = draw_spied(
        plots, plots.write_plots, pd.DataFrame(rows), tmp_path, save=False, check=False
    )["seen"]
    (ax,) = seen["score_vs_memory-dermamnist-vit-tiny"]["axes"]
    label = " ".join(ax["xlabel"].split())
    assert label.startswith("memory used while training (MB): ")
    assert CPU_WORDS in label and GPU_WORDS in label


def _curves(**kw: Any) -> pd.DataFrame:
    rows = [
        {"block": "derma 8-shot · vit_b", "method": m, "budget": b, "split_seed": s, "k": k,
         "best_val": 70.0 + k + s, "metric": "accuracy", **kw}
        for m, b in (("lora", 4), ("lora", 8), (LONG, 4))
        for s in (0, 1)
        for k in range(1, b + 1)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_budget_figure(tmp_path: Path) -> None:
    drawn = draw_spied(plots, plots.write_budget_plots, _curves(), tmp_path)
    assert [p.name for p in drawn["paths"]] == ["budget-derma-8-shot-vit-b.png",
                                                "budget-derma-8-shot-vit-b.pdf"]  # fmt: skip
    figure = drawn["seen"]["budget-derma-8-shot-vit-b"]
    assert figure["problems"] == [] and not figure["demo"]
    (ax,) = figure["axes"]
    lora = method_style("lora")
    # mean over the split seeds: 70 + k + 0.5
    assert ax["lines"]["lora (budget 4)"] == pytest.approx([1, 71.5, 2, 72.5, 3, 73.5, 4, 74.5])
    assert ax["legend"]["lora (budget 4)"][:2] == ax["legend"]["lora (budget 8)"][:2]
    assert ax["legend"]["lora (budget 4)"][0] == lora.color
    stamped = draw_spied(
        plots, plots.write_budget_plots, _curves(), tmp_path, save=False, demo=True
    )
    assert stamped["seen"]["budget-derma-8-shot-vit-b"]["demo"]
    from_column = draw_spied(
        plots, plots.write_budget_plots, _curves(demo=True), tmp_path, save=False
    )
    assert from_column["seen"]["budget-derma-8-shot-vit-b"]["demo"]


def test_every_figure_has_a_caption(small: dict[str, Any], clustered: dict[str, Any]) -> None:
    stems = [*small["seen"], *clustered["seen"], "budget-derma-8-shot-vit-b"]
    assert {figure_kind(s) for s in stems} >= {"score_vs_shots", "score_vs_train_flops"}
    for stem in stems:
        assert len(caption(stem)) > 100, stem
    for kind in ("score_vs_params", "score_vs_train_flops", "score_vs_memory", "score_vs_shots"):
        assert "over the seeds" in caption(f"{kind}-x"), kind  # what the bars are over
