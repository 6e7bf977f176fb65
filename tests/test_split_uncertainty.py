"""What the splits can resolve, said before training and under each scores table: sizes, the
primary metric's 95 % interval at those sizes, the validation-test gap and the epoch kept per
method; records from before the class counts were kept still read."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from bench.report import records_frame, summarize
from bench.report.resolution import resolution_note
from bench.report.summary import blocks
from bench.split_sizes import split_rows, wide_warnings


class _Split:
    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)


def _data(task: str, metric: str, val: np.ndarray, test: np.ndarray, classes: int = 2):
    """What split_rows reads of a LoadedDataset."""
    card = SimpleNamespace(name="derma", task=task, primary_metric=metric)
    splits = {"train": _Split(val), "val": _Split(val), "test": _Split(test)}
    return SimpleNamespace(card=card, splits=splits, num_classes=classes)


def test_a_small_validation_split_is_said_wide_before_training() -> None:
    small = np.arange(100) % 2
    large = np.arange(2000) % 2
    rows = split_rows({("derma", None, 0): _data("binary", "accuracy", small, large)})
    (row,) = rows
    # binomial at the assumed 0.85: sqrt(0.85 * 0.15 / 100) = 0.035707 -> 95 %: ±0.069985
    assert row.val.half_width == pytest.approx(0.069985, abs=1e-6)
    # sqrt(0.85 * 0.15 / 2000) = 0.0079844 -> ±0.015649; unpaired difference: x sqrt(2)
    assert row.test.half_width == pytest.approx(0.015649, abs=1e-6)
    assert row.test.resolvable == pytest.approx(0.022131, abs=1e-6)
    (line,) = wide_warnings(rows)
    assert "derma: 100 validation images give accuracy ±0.070" in line
    assert not wide_warnings(
        split_rows({("d", None, 0): _data("binary", "accuracy", large, large)})
    )


def test_auc_uses_the_class_counts_and_few_shot_views_share_validation() -> None:
    val = np.array([1] * 21 + [0] * 57)  # the 78 validation images of a small binary set
    data = _data("binary", "auc", val, val)
    rows = split_rows({("derma", 5, 0): data, ("derma", 5, 1): data})
    assert len(rows) == 1 and rows[0].dataset == "derma 5-shot x0"
    assert rows[0].val.method == "Hanley-McNeil" and rows[0].val.wide


def _record(method: str, seed: int, *, val: float, test: float, kept: int, counts: bool) -> dict:
    dataset: dict[str, Any] = {"task": "binary", "primary_metric": "auc",
                               "sizes": {"train": 400, "val": 78, "test": 156}}  # fmt: skip
    if counts:
        dataset["class_counts"] = {"val": [57, 21], "test": [114, 42]}
    return {
        "schema": 1,
        "run_id": f"{method}-{seed}",
        "status": "ok",
        "config": {
            "dataset": "breast",
            "method": method,
            "backbone": "vit_s",
            "seed": seed,
            "epochs": 10,
        },
        "dataset": dataset,
        "metrics": {
            "primary_metric": "auc",
            "primary": test,
            "test": {"auc": test},
            "val": {"auc": val},
        },
        "training": {"best_epoch": kept, "history": [{"epoch": i} for i in range(10)]},
        "params": {"trainable_params": 1000, "trainable_pct": 1.0},
    }


def test_the_summary_shows_the_gap_and_the_epoch_kept() -> None:
    records = [
        _record("lora", 0, val=0.94, test=0.89, kept=3, counts=True),
        _record("lora", 1, val=0.92, test=0.89, kept=5, counts=True),
        _record("full", 0, val=0.81, test=0.77, kept=0, counts=True),
    ]
    (_title, table, notes) = blocks(summarize(records_frame(records)))[0]
    rows = table.set_index("method")
    # mean of (94 - 89, 92 - 89) points; the epoch kept counted from 1, median over seeds
    assert rows.loc["lora", "gap"] == "+4.00" and rows.loc["lora", "epoch"] == "5/10"
    assert rows.loc["full", "gap"] == "+4.00" and rows.loc["full", "epoch"] == "1/10"
    assert notes[0].startswith(
        "Each score stands on 156 test images (its epoch chosen on 78 validation images): auc ±"
    )
    assert "Hanley-McNeil" in notes[0]


def test_the_resolution_sentence_by_hand() -> None:
    df = records_frame([_record("lora", 0, val=0.9, test=0.9, kept=1, counts=True)])
    note = resolution_note(df, 90.0)
    # Hanley-McNeil, A = 0.9, 42 positives, 114 negatives: Q1 = 0.9/1.1 = 0.818182,
    # Q2 = 1.62/1.9 = 0.852632; var = (0.09 + 41 x 0.008182 + 113 x 0.042632) / 4788
    # = (0.09 + 0.335455 + 4.817368) / 4788 = 0.00109500 -> se 0.033091: ±6.5, resolves 9.2
    assert "±6.5 points" in note and "closer than 9.2 points" in note


def test_records_without_class_counts_still_read() -> None:
    old = records_frame([_record("lora", 0, val=0.9, test=0.85, kept=2, counts=False)])
    assert resolution_note(old, 85.0) is None  # AUC needs the counts older records lack
    (_, table, notes) = blocks(summarize(old))[0]
    assert table.loc[0, "gap"] == "+5.00" and not any("test images" in n for n in notes)


def test_a_dry_run_says_it_from_the_labels_alone(tiny_data_root, tmp_path) -> None:
    from typer.testing import CliRunner

    from bench.catalog import get_card
    from bench.cli import app
    from bench.split_sizes import dry_run_rows
    from tests.conftest import grid_args

    (row,), unknown = dry_run_rows([get_card("pneumoniamnist")], tiny_data_root)
    assert (row.n_val, row.n_test, unknown) == (24, 24, [])
    # 24 images, 12 per class, AUC at 0.85 by Hanley-McNeil: wide
    assert row.metric == "auc" and row.val.method == "Hanley-McNeil" and row.val.wide
    res = CliRunner().invoke(app, [*grid_args(tiny_data_root, tmp_path / "r"), "--dry-run"],
                             env={"COLUMNS": "200"})  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "what the splits can resolve" in res.output
    assert "pneumoniamnist: 24 validation images give auc ±" in res.output
    assert not (tmp_path / "r").exists()  # a dry run writes nothing
