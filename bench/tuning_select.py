"""Picking a search's winner: the trial entry of a record and its score, the tie rule, and the final cells and notes of the selected configuration."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from bench.config import CellConfig
from bench.metric_table import HIGHER_IS_BETTER

if TYPE_CHECKING:  # the report imports TIE_RULE from here and never imports torch
    from bench.tuning_plan import Group, TuneRequest

TIE_RULE = (
    "ties on the validation score go to the smaller learning rate, then the smaller weight "
    "decay, then the earlier trial (VPT's rule, Jia et al. 2022)"
)


def trial_result(outcome: str, metric: str, value: float | None) -> dict[str, Any]:
    """A trial record's `trial` entry: how it ended and its validation score (None when it has
    none: diverged, out of memory, or an undefined metric)."""
    ok = value is not None and math.isfinite(value)
    return {
        "outcome": outcome,
        "metric": metric,
        "val_primary": float(value) if ok else None,
        "higher_is_better": HIGHER_IS_BETTER.get(metric, True),
    }


def score(record: dict[str, Any] | None) -> float | None:
    """A trial's validation score, larger is better; None when it has none."""
    if record is None or record.get("status") != "trial":
        return None
    trial = record.get("trial") or {}
    value = trial.get("val_primary")
    if trial.get("outcome") != "ok" or value is None:
        return None
    return float(value) if trial.get("higher_is_better", True) else -float(value)


def rank(group: Group, records: list[dict[str, Any] | None]) -> list[int]:
    """Indices of the scored trials, best first: by validation score, ties by TIE_RULE."""
    scored = [(i, s) for i, s in enumerate(map(score, records)) if s is not None]
    trials = group.trials
    scored.sort(key=lambda t: (-t[1], trials[t[0]].lr, trials[t[0]].weight_decay, t[0]))
    return [i for i, _ in scored]


def select(group: Group, records: list[dict[str, Any] | None]) -> int | None:
    """Index of the selected trial: the best validation score, ties broken by TIE_RULE; None
    when no trial has a score."""
    ranked = rank(group, records)
    return ranked[0] if ranked else None


def final_cells(group: Group, chosen: int, seeds: list[int], tune: TuneRequest) -> list[CellConfig]:
    """The selected configuration at every requested seed, tagged with the search that chose
    it (a final's run id differs from an untuned run's, and from another budget's)."""
    tag = {"role": "final", "budget": tune.budget, "tune_seed": tune.seed,
           "space": group.space.digest()}  # fmt: skip
    if tune.scheduler != "none":  # in the id only when used: plain searches keep theirs
        tag |= {"scheduler": tune.scheduler, "eta": tune.eta}
    selected = dataclasses.replace(group.trials[chosen], epochs=group.base.epochs)
    return [dataclasses.replace(selected, seed=s, tuning=tag) for s in seeds]


def final_annotation(
    group: Group, chosen: int, by_rung: list[list[dict[str, Any] | None]], tune: TuneRequest
) -> dict[str, Any]:
    """What a final record says about the search that chose it: the budget, the space, every
    trial in order with its validation score (at the last rung it reached), the selected one,
    and, with a scheduler, each rung's epochs and trials."""
    from bench.tuning_plan import lr_entry  # the planning side imports the methods (torch)

    config = group.configs[chosen]
    records = [next((rung[i] for rung in reversed(by_rung) if rung[i]), None)
               for i in range(len(group.configs))]  # fmt: skip
    metric = next(((r.get("trial") or {}).get("metric") for r in records if r), None)
    note = {
        "hyperparameters": {
            "regime": "tuned",
            "source": f"search, budget {tune.budget}, selected on validation {metric}",
            "searched": config,
            "lr": lr_entry(group, config, group.trials[chosen]),
        },
        "tuning": {
            "budget": tune.budget,
            "tune_seed": tune.seed,
            "mode": group.mode,
            "space": group.space.describe(),
            "selected_by": f"validation {metric}",
            "tie_rule": TIE_RULE,
            "selected": chosen,
            "trials": [
                {
                    "run_id": cell.run_id,
                    "config": cfg,
                    "outcome": (rec.get("trial") or {}).get("outcome") if rec else None,
                    "val_primary": (rec.get("trial") or {}).get("val_primary") if rec else None,
                }
                for cfg, cell, rec in zip(group.configs, group.trials, records, strict=True)
            ],
        },
    }
    if tune.scheduler != "none":
        note["tuning"]["scheduler"] = {
            "name": tune.scheduler,
            "eta": tune.eta,
            "rungs": [
                {
                    "epochs": epochs,
                    "trials": [i for i, r in enumerate(rung) if r is not None],
                    "val_primary": [_val(r) for r in rung if r is not None],
                }
                for (epochs, _), rung in zip(group.rungs, by_rung, strict=False)
            ],
        }
        for entry, cell_records in zip(note["tuning"]["trials"], zip(*by_rung, strict=True),
                                       strict=True):  # fmt: skip
            entry["epochs"] = max(
                (e for (e, _), r in zip(group.rungs, cell_records, strict=False) if r), default=None
            )
    return note


def _val(record: dict[str, Any] | None) -> float | None:
    return ((record or {}).get("trial") or {}).get("val_primary")


def selected_text(group: Group, chosen: int, records: list[dict[str, Any] | None]) -> str:
    """'lr=1 (0.125 at batch 32), weight_decay=0.001, prompt_length=5: val accuracy 0.904'."""
    config, cell = group.configs[chosen], group.trials[chosen]
    parts = []
    for key, value in config.items():
        text = f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
        if key == "lr" and group.space.lr_rule is not None:
            text += f" ({cell.lr:g} at batch {cell.batch_size})"
        parts.append(text)
    trial = (records[chosen] or {}).get("trial") or {}
    return ", ".join(parts) + f": val {trial.get('metric')} {trial.get('val_primary'):.4f}"
