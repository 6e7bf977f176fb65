"""A report over 3 datasets x 3 seeds x 6 methods whose records saved their test predictions:
the page carries what a reviewer asks for (Friedman test with its critical-difference diagram,
intervals whose captions say what they are over, per-class results and confusion matrices,
DeLong tests), every artefact says DEMO, and every table fits a 1400 px window."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from bench.demo import DEMO_NOTICE
from bench.predictions import predictions_path, save_predictions
from bench.records import load_records, write_record
from bench.report import html as html_report
from bench.report import records_frame, write_report

METHODS = {"full": 1.6, "linear": 0.9, "vpt": 1.1, "lora": 1.5, "ept": 1.4, "fpt": 1.7}
# name, task, primary metric, classes, test images per class
DATASETS = (
    ("dermamnist", "multiclass", "accuracy", ["nevus", "melanoma", "keratosis", "other"], 30),
    ("pneumoniamnist", "binary", "auc", ["normal", "pneumonia"], 40),
    ("bloodmnist", "multiclass", "accuracy", ["neutrophil", "eosinophil", "lymphocyte"], 25),
)
SEEDS = (0, 1, 2)


def _record(results: Path, dataset: tuple, method: str, seed: int) -> None:
    """One cell's record and its predictions file, as `bench run` writes them: the method's
    logits lean towards the true class by its strength, plus seed noise."""
    name, task, metric, classes, per_class = dataset
    labels = np.repeat(np.arange(len(classes)), per_class)
    rng = np.random.default_rng([DATASETS.index(dataset), seed, list(METHODS).index(method)])
    logits = rng.normal(size=(labels.size, len(classes)))
    logits[np.arange(labels.size), labels] += METHODS[method] + 0.1 * seed
    if metric == "accuracy":
        primary = float(np.mean(logits.argmax(axis=1) == labels))
    else:
        primary = float(roc_auc_score(labels, logits[:, 1] - logits[:, 0]))
    run_id = f"{name}-{method}-{seed}"
    entry = save_predictions(predictions_path(results, run_id), {"test": (logits, labels)})
    write_record(
        results,
        {
            "schema": 1,
            "run_id": run_id,
            "status": "ok",
            "error": None,
            "demo": True,
            "config": {
                "dataset": name,
                "method": method,
                "backbone": "demo-vit",
                "seed": seed,
                "shots": None,
                "split_seed": 0,
                "pretrained": True,
                "epochs": 3,
            },
            "dataset": {"task": task, "classes": classes, "primary_metric": metric},
            "metrics": {"primary_metric": metric, "primary": primary, "test": {metric: primary}},
            "params": {"trainable_params": 1000 * len(method), "trainable_pct": len(method)},
            "predictions": entry,
        },
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("stats-report")
    results = root / "results"
    results.mkdir()
    for dataset in DATASETS:
        for method in METHODS:
            for seed in SEEDS:
                _record(results, dataset, method, seed)
    loaded = load_records(results)
    assert len(loaded.records) == 54 and not loaded.notes()
    df = records_frame(loaded.records)
    assert df["predictions_file"].notna().all()
    out = root / "report"
    written = write_report(df, out, plots=True, records=loaded.records)
    return out, written


def test_page_has_cd_diagram_intervals_per_class_and_delong(report) -> None:
    out, written = report
    page = (out / "index.html").read_text()
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    for heading in (
        "Methods over blocks: Friedman test and critical difference",
        "Test-set bootstrap intervals",
        "Per-class results",
        "DeLong tests of ROC AUC",
        "Over blocks: IQM of the gain over full",
    ):
        assert heading in headings
    # 3 complete blocks, 6 methods: a test and its diagram, captioned with how to read it
    assert "k = 6 methods, N = 3 complete blocks" in page
    assert "Critical-difference diagram (Demšar 2006)" in page
    assert (out / "figures" / "cd-diagram.png") in written
    # every interval says what it is over
    assert "95 % t interval of the mean over those runs" in page
    assert "percentile bootstrap over test images" in page
    assert "stratified percentile bootstrap" in page
    # per class: every class of every dataset named, a confusion figure per block
    for _, _, _, classes, _ in DATASETS:
        assert all(f'<td class="label">{c}</td>' in page for c in classes)
    assert len(list((out / "figures").glob("confusion-*.png"))) == 3
    per_class = pd.read_csv(out / "per_class.csv")
    assert len(per_class) == 6 * (4 + 2 + 3) and per_class["demo"].all()
    assert set(per_class["n_seeds"]) == {3}


def test_every_artefact_of_the_report_says_demo(report) -> None:
    out, written = report
    for path in written:
        if path.suffix == ".csv":
            assert pd.read_csv(path)["demo"].all(), path.name
        elif path.suffix in (".md", ".html", ".tex"):
            assert DEMO_NOTICE in path.read_text(), path.name
    assert "DEMO:" in (out / "stats.md").read_text().splitlines()[0]


@pytest.mark.skipif(html_report.find_browser() is None, reason="no Chromium-family browser")
def test_statistics_page_fits_1400px(report) -> None:
    out, _ = report
    result = html_report.check_in_browser(out / "index.html", screenshot_to=out / "page.png")
    assert result is not None and result["images_loaded"]
    assert result["overflowing"] == [], result["overflowing"]
    assert not result["page_overflows"]
