"""Figures (bench.report.plots and the modules it draws with) and the self-contained HTML report
(bench.report.html)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bench.report import html as html_report
from bench.report import plots, stats
from bench.report.plot_data import aggregate, pool_calibration, prepare
from tests.figure_checks import draw_spied

N_BINS = 15
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NO_BROWSER = "chromium not installed (apt-get install chromium)"
# What records say their memory figure means (bench.measure.memory, which imports torch).
GPU_WORDS = "the most GPU memory PyTorch allocated at once"
CPU_WORDS = "the most memory the process held at once"


def _calibration(filled: dict[int, tuple[int, float, float]]) -> dict[str, Any]:
    """15 bins, empty except `filled`: {bin: (count, confidence, accuracy)}."""
    count = [0] * N_BINS
    conf: list[float | None] = [None] * N_BINS
    acc: list[float | None] = [None] * N_BINS
    for i, (k, c, a) in filled.items():
        count[i], conf[i], acc[i] = k, c, a
    return {"n_bins": N_BINS, "count": count, "confidence": conf, "accuracy": acc}


def _row(method: str, seed: int, shots: Any, primary: float, **kw: Any) -> dict[str, Any]:
    cost = {"linear": 0.02, "lora": 1.2, "full": 100.0, "fpt": 3.0}[method]
    mem = {"linear": 300.0, "lora": 500.0, "full": 9000.0, "fpt": float("nan")}[method]
    row = {
        "run_id": f"{method}-{shots}-{seed}",
        "status": "ok",
        "error": None,
        "dataset": "dermamnist",
        "method": method,
        "seed": seed,
        "shots": shots,
        "split_seed": seed,
        "backbone": "vit_tiny",
        "pretrained": True,
        "setting": f"{method}{shots}",
        "demo": True,
        "primary_metric": "accuracy",
        "primary": primary,
        "accuracy": primary,
        "ece": 0.05 + 0.01 * seed,
        "trainable_pct": cost,
        "peak_train_mem_mb": mem,
        "memory_source": GPU_WORDS,
        "train_s": 10.0 * (1 + cost) ** 0.5,
        "train_img_s": 500.0 / (1 + cost) ** 0.5,
        "calibration": _calibration({10: (3, 0.7, 0.6), 14: (5, 0.95, 1.0)}),
    }
    row.update(kw)
    return row


def _frame() -> pd.DataFrame:
    """Two blocks (4- and 8-shot) of one dataset: linear and lora on the Pareto front, full
    dominated, fpt failed in every seed; 2 seeds each."""
    rows = []
    for shots, bump in ((4, 0.0), (8, 0.05)):
        for seed in (0, 1):
            d = 0.02 * seed
            rows += [
                _row("linear", seed, shots, 0.60 + bump + d),
                _row("lora", seed, shots, 0.70 + bump + d),
                _row("full", seed, shots, 0.65 + bump + d),
                _row(
                    "fpt",
                    seed,
                    shots,
                    float("nan"),
                    status="oom",
                    error="CUDA OOM",
                    calibration=None,
                ),
            ]
    # A failed seed that still carries a score must not be averaged in.
    rows.append(_row("lora", 2, 8, 0.10, status="diverged", error="NaN loss"))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    df = _frame()
    # One 8-shot method without calibration data: left out of that reliability figure only.
    linear8 = (df["method"] == "linear") & (df["shots"] == 8)
    df["calibration"] = [None if m else c for m, c in zip(linear8, df["calibration"], strict=True)]
    return df


@pytest.fixture(scope="module")
def drawn(frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Write the figures once, recording what each figure shows before it is closed."""
    out = tmp_path_factory.mktemp("plots")
    return {**draw_spied(plots, plots.write_plots, frame, out), "out": out}


def test_block_title() -> None:
    assert plots.block_title("derma", None, "vit_t") == "derma · vit_t"
    assert plots.block_title("derma", float("nan"), "vit_t") == "derma · vit_t"
    assert plots.block_title("derma", 0, "vit_t") == "derma · vit_t"
    assert plots.block_title("derma", 10.0, "vit_t") == "derma 10-shot · vit_t"


def test_pareto_mask_hand_example() -> None:
    cost = [1.0, 2.0, 2.0, 3.0, 1.0, float("nan"), 0.5]
    score = [80.0, 85.0, 85.0, 70.0, 75.0, 99.0, float("nan")]
    # (3, 70) and (1, 75) are dominated by (1, 80); the (2, 85) tie stays twice; NaN points
    # are neither on the front nor dominate (1, 80) though one is cheaper, one better.
    assert stats.pareto_front(cost, score).tolist() == [
        True,
        True,
        True,
        False,
        False,
        False,
        False,
    ]
    assert stats.pareto_front([], []).tolist() == []


def test_pool_calibration_weights_by_count() -> None:
    a = _calibration({10: (2, 0.6, 0.5), 12: (4, 0.8, 0.75)})
    b = _calibration({10: (6, 0.7, 1.0)})
    other_bins = {"n_bins": 10, "count": [100] * 10, "confidence": [0.5] * 10, "accuracy": [0] * 10}
    pooled = pool_calibration([a, None, b, other_bins])
    assert pooled["count"].tolist() == [0] * 10 + [8, 0, 4, 0, 0]
    assert pooled["confidence"][10] == pytest.approx((2 * 0.6 + 6 * 0.7) / 8)
    assert pooled["accuracy"][10] == pytest.approx((2 * 0.5 + 6 * 1.0) / 8)
    assert pooled["accuracy"][12] == pytest.approx(0.75)
    assert np.isnan(pooled["accuracy"][0]) and np.isnan(pooled["confidence"][11])
    assert pool_calibration([None, float("nan")]) is None


def test_aggregate_means_ok_seeds_only(frame: pd.DataFrame) -> None:
    agg = aggregate(prepare(frame), ["dataset", "_shots", "_backbone"])
    assert sorted(set(agg["method"])) == ["full", "linear", "lora"]  # fpt failed everywhere
    lora8 = agg[(agg["method"] == "lora") & (agg["_shots"] == 8)].iloc[0]
    assert lora8["n"] == 2  # the diverged seed is not averaged in
    assert lora8["mean"] == pytest.approx(76.0)  # (75 + 77) / 2, percent
    assert lora8["std"] == pytest.approx(math.sqrt(2.0))  # sample std of 75, 77
    assert lora8["ece_pct"] == pytest.approx(5.5)
    assert lora8["demo"] and lora8["memory_source"] == GPU_WORDS


def _expected_stems() -> list[str]:
    stems = []
    for block in ("dermamnist-4-shot-vit-tiny", "dermamnist-8-shot-vit-tiny"):
        stems += [
            f"{kind}-{block}"
            for kind in ("score_vs_params", "score_vs_memory", "train_time", "reliability")
        ]
    return [*stems, "score_vs_shots-dermamnist-vit-tiny"]


def test_write_plots_files(drawn: dict[str, Any]) -> None:
    out: Path = drawn["out"]
    expected = [out / f"{s}.{ext}" for s in _expected_stems() for ext in ("png", "pdf")]
    assert drawn["paths"] == expected
    assert sorted(out.iterdir()) == sorted(expected)  # nothing else written
    for p in expected:
        data = p.read_bytes()
        if p.suffix == ".png":
            assert data.startswith(PNG_MAGIC) and len(data) > 5_000, p.name
        else:
            assert data.startswith(b"%PDF") and len(data) > 1_000, p.name


def test_figure_contents(drawn: dict[str, Any]) -> None:
    seen = drawn["seen"]
    (ax,) = seen["score_vs_params-dermamnist-4-shot-vit-tiny"]["axes"]
    assert ax["xscale"] == "log"
    assert {"0.1", "1", "10", "100"} <= set(ax["xticks"])  # plain numbers, not 10^k
    assert ax["texts"] == []  # no label beside a point: the legend names them
    # best score first, each with its seed count; the front last
    assert list(ax["legend"]) == [
        "lora\xa0·\xa02\xa0seeds",
        "full\xa0·\xa02\xa0seeds",
        "linear\xa0·\xa02\xa0seeds",
        "Pareto front",
    ]
    # Front: linear (0.02 %, 61) then lora (1.2 %, 71); full (100 %, 66) is dominated.
    assert ax["lines"]["Pareto front"] == pytest.approx([0.02, 61.0, 1.2, 71.0])
    (ax,) = seen["score_vs_memory-dermamnist-4-shot-vit-tiny"]["axes"]
    assert ax["xscale"] == "log"  # 300 .. 9000 MB spans more than 20x
    assert "Pareto front" not in ax["lines"]  # GPU and CPU memory are not one scale
    (ax,) = seen["train_time-dermamnist-4-shot-vit-tiny"]["axes"]
    assert ax["yticks"] == ["linear", "lora", "full"]  # sorted by training time
    assert len(ax["texts"]) == 3 and all(t.endswith("img/s") for t in ax["texts"])
    panels = seen["reliability-dermamnist-4-shot-vit-tiny"]["axes"]
    titles = [a["title"] for a in panels if a["title"]]
    # 3 + 5 predictions per seed, 2 seeds
    assert titles == [f"{m}\nECE 5.50% · n = 16" for m in ("full", "linear", "lora")]
    strips = [a["texts"] for a in panels if a["texts"]]
    assert strips == [["10", "6"]] * 3  # each bin's count, under its panel
    titles = [a["title"] for a in seen["reliability-dermamnist-8-shot-vit-tiny"]["axes"]]
    assert [t for t in titles if t] == [
        "full\nECE 5.50% · n = 16",
        "lora\nECE 5.50% · n = 16",
    ]  # linear has no calibration there
    (ax,) = seen["score_vs_shots-dermamnist-vit-tiny"]["axes"]
    assert ax["xticks"] == ["4", "8"]
    # nudged sideways by at most 0.15 of a shot slot, so close methods' bars stay apart
    x4, y4, x8, y8 = ax["series"]["lora"]
    assert (abs(x4), abs(x8 - 1), y4, y8) == pytest.approx((0.15, 0.15, 71.0, 76.0), abs=1e-9)
    assert sorted(ax["series"]) == ["full", "linear", "lora"]


def test_no_label_overlaps_a_label_or_a_point(drawn: dict[str, Any]) -> None:
    for stem, figure in drawn["seen"].items():
        assert figure["problems"] == [], stem
        assert figure["demo"], stem  # drawn from demo runs: stamped


def test_full_data_random_init_block(tmp_path: Path) -> None:
    from bench.report import records_frame

    # records_frame names a random-init backbone apart, so it is its own block in every output
    rec = {"run_id": "r", "status": "ok", "config": {"backbone": "vit_tiny", "pretrained": False}}
    assert records_frame([rec])["backbone"].iloc[0] == "vit_tiny (random init)"
    df = pd.DataFrame(
        [
            _row(
                "linear",
                s,
                None,
                0.5,
                dataset="chestmnist",
                backbone="vit_tiny (random init)",
                calibration=None,
            )
            for s in (0, 1)
        ]
    )
    names = [p.name for p in plots.write_plots(df, tmp_path)]
    block = "chestmnist-vit-tiny-random-init"
    assert names == [
        f"{kind}-{block}.{ext}"
        for kind in ("score_vs_params", "score_vs_memory", "train_time")
        for ext in ("png", "pdf")
    ]  # no calibration -> no reliability figure; one shot count -> no shots figure


def test_nothing_to_draw(tmp_path: Path) -> None:
    assert plots.write_plots(pd.DataFrame(), tmp_path / "a") == []
    failed = _frame()
    failed["status"] = "failed"
    assert plots.write_plots(failed, tmp_path / "b") == []
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _page(drawn: dict[str, Any], frame: pd.DataFrame) -> tuple[str, list[dict[str, Any]]]:
    pngs = [p for p in drawn["paths"] if p.suffix == ".png"]
    sections = [
        {
            "heading": "dermamnist 4-shot · vit_tiny",
            "html": frame.head(3)[["method", "primary"]].to_html(index=False),
            "figures": pngs[:4],
            "notes": ["Scores are percentages & <b>not</b> bold."],
        },
        {
            "heading": "a <script>alert(1)</script> heading",
            "html": frame.tail(2)[["method", "primary"]].to_html(index=False),
            "figures": pngs[4:],
            "notes": [],
        },
    ]
    notice = "DEMO: synthetic images; not a medical result"
    return html_report.render_html("medpeft <report>", sections, notice=notice), sections


def test_render_html(drawn: dict[str, Any], frame: pd.DataFrame) -> None:
    import base64

    page, sections = _page(drawn, frame)
    assert "dermamnist 4-shot · vit_tiny" in page
    assert "a &lt;script&gt;alert(1)&lt;/script&gt; heading" in page and "<script>" not in page
    assert "&lt;b&gt;not&lt;/b&gt;" in page and "<title>medpeft &lt;report&gt;</title>" in page
    for sec in sections:
        for p in sec["figures"]:
            assert f"data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" in page
    assert page.count("<img ") == 9 and page.count("<table") == 2
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page)
    assert refs and all(r.startswith(("data:", "#")) for r in refs)
    ids = re.findall(r'<section id="([^"]+)"', page)
    assert ids == ["dermamnist-4-shot-vit-tiny", "a-script-alert-1-script-heading"]
    assert [r for r in refs if r.startswith("#")] == [f"#{i}" for i in ids]  # the nav
    assert page.index("DEMO: synthetic") < page.index("<nav>")  # notice on top


def test_render_html_missing_figure(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        html_report.render_html("t", [{"heading": "h", "figures": [tmp_path / "gone.png"]}])


@pytest.mark.skipif(html_report.find_browser() is None, reason=NO_BROWSER)
def test_page_in_headless_browser(
    drawn: dict[str, Any], frame: pd.DataFrame, tmp_path: Path
) -> None:
    page, _ = _page(drawn, frame)
    index = tmp_path / "index.html"
    index.write_text(page, encoding="utf-8")
    result = html_report.check_in_browser(index)
    assert result is not None
    assert (result["tables"], result["images"]) == (2, 9)
    assert result["images_data_uri"] and result["images_loaded"]
    assert result["external_refs"] == []
    assert result["screenshot_bytes"] > 5_000


@pytest.mark.skipif(html_report.find_browser() is None, reason=NO_BROWSER)
def test_browser_check_flags_outside_image(tmp_path: Path) -> None:
    page = html_report.render_html("t", [{"heading": "h", "html": "<table></table>"}])
    index = tmp_path / "index.html"
    index.write_text(page.replace("</table>", '</table><img src="https://example.invalid/x.png">'))
    result = html_report.check_in_browser(index)
    assert (result["tables"], result["images"]) == (1, 1)
    assert not result["images_data_uri"] and not result["images_loaded"]
    assert result["external_refs"] == ["https://example.invalid/x.png"]
