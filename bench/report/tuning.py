"""The hyperparameter search in the report: its table, best-of-k curves and budget caption.

One row per search, the best-of-k validation curve per method, and the statement of the budget
that table captions carry (bench.tuning).

Reads only records: a search is described by its final records' `tuning` entry (the trials in
order, with their validation scores); trial records are counted by outcome.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from bench.metric_table import LOWER_IS_BETTER, scale
from bench.report.formats import to_markdown
from bench.report.names import block_title


def tuned_label(method: str, budget: Any) -> str:
    """The row name of a tuned method in every table and figure, apart from its fixed rows."""
    return f"{method} (tuned, budget {budget})"


def role(cfg: dict[str, Any]) -> str | None:
    """'trial' or 'final' for a record's config from a search, None otherwise
    (`CellConfig.role` for a config read back from JSON)."""
    tuning = cfg.get("tuning")
    return tuning.get("role") if isinstance(tuning, dict) else None


def row_name(cfg: dict[str, Any]) -> str:
    """The method as tables and `bench status` name it: a search's trials and its tuned runs are
    rows of their own beside the method's fixed-hyperparameter runs."""
    method = str(cfg.get("method", "?"))
    if role(cfg) == "trial":
        return f"{method} (search trials)"
    if role(cfg) == "final":
        return tuned_label(method, cfg["tuning"].get("budget"))
    return method


def is_trial(record: dict[str, Any]) -> bool:
    return role(record.get("config") or {}) == "trial"


def _searches(records: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(config, tuning entry) of each search, once: finals of one search share their entry."""
    seen: dict[tuple, tuple[dict[str, Any], dict[str, Any]]] = {}
    for r in records:
        cfg = r.get("config") or {}
        tuning = r.get("tuning")
        if role(cfg) != "final" or not isinstance(tuning, dict):
            continue
        key = (cfg.get("dataset"), cfg.get("shots"), cfg.get("split_seed"), cfg.get("backbone"),
               cfg.get("pretrained"), cfg.get("method"), json_key(cfg["tuning"]))  # fmt: skip
        seen.setdefault(key, (cfg, tuning))
    return list(seen.values())


def json_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _block(cfg: dict[str, Any]) -> str:
    backbone = (cfg.get("backbone") or "") + (
        " (random init)" if cfg.get("pretrained") is False else ""
    )
    return block_title(cfg.get("dataset"), int(cfg.get("shots") or 0), backbone)


def _config_text(config: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items()
    )


def search_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per search: where, the budget and space, how many trials scored, the selected
    configuration (base lr where a batch rule applies) and its validation score in percent."""
    rows = []
    for cfg, t in _searches(records):
        trials = t.get("trials") or []
        scores = [x.get("val_primary") for x in trials]
        chosen = t.get("selected")
        space = t.get("space") or {}
        selected = trials[chosen] if isinstance(chosen, int) and chosen < len(trials) else {}
        metric = str(t.get("selected_by", "")).replace("validation ", "")
        value = selected.get("val_primary")
        rows.append(
            {
                "block": _block(cfg),
                "method": cfg.get("method"),
                "split_seed": cfg.get("split_seed", 0),
                "budget": t.get("budget"),
                "mode": t.get("mode")
                + (" + halving" if (t.get("scheduler") or {}).get("name") == "halving" else ""),
                "space": space.get("size"),
                "scored": sum(s is not None for s in scores),
                "trials": len(trials),
                "selected": _config_text(selected.get("config") or {}),
                "lr used": cfg.get("lr"),
                "val": None if value is None else value * scale(metric),
                "metric": metric,
                "lr rule": space.get("lr_rule") or "",
            }
        )
    return pd.DataFrame(rows)


def curve_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Best validation score among the first k trials, k = 1..budget, per search; a diverged
    trial scores nothing and leaves the best so far unchanged. Exactly what a search with budget
    k selects on, since a smaller budget tries a prefix of a larger one's trials."""
    # A smaller budget's trials are the first of a larger one's (same seed and space): only
    # the largest budget of each search is drawn, its prefix is the smaller one's curve.
    largest: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for cfg, t in _searches(records):
        if t.get("scheduler"):
            continue  # trials stopped at different rungs: their scores are not comparable
        key = json_key([_block(cfg), cfg.get("method"), cfg.get("split_seed", 0),
                        t.get("tune_seed"), t.get("space")])  # fmt: skip
        if key not in largest or (t.get("budget") or 0) > (largest[key][1].get("budget") or 0):
            largest[key] = (cfg, t)
    rows = []
    for cfg, t in largest.values():
        metric = str(t.get("selected_by", "")).replace("validation ", "")
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        best = -np.inf
        for k, trial in enumerate(t.get("trials") or [], start=1):
            value = trial.get("val_primary")
            if value is not None:
                best = max(best, sign * value)
            rows.append(
                {
                    "block": _block(cfg),
                    "method": cfg.get("method"),
                    "budget": t.get("budget"),
                    "split_seed": cfg.get("split_seed", 0),
                    "k": k,
                    "best_val": sign * best * scale(metric) if np.isfinite(best) else np.nan,
                    "metric": metric,
                }
            )
    return pd.DataFrame(rows)


def trial_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """Trial records by outcome (`failed` trials are retried by the next run)."""
    counts: dict[str, int] = {}
    for r in records:
        if is_trial(r):
            key = (r.get("trial") or {}).get("outcome") or r.get("status") or "?"
            counts[key] = counts.get(key, 0) + 1
    return counts


def tuned_budgets(df: pd.DataFrame) -> list[int]:
    """The budgets of the tuned rows of a records frame, ascending ([] when none is tuned)."""
    if df.empty or "regime" not in df:
        return []
    return sorted({int(b) for b in df.loc[df["regime"] == "tuned", "budget"].dropna()})


def budget_note(df: pd.DataFrame) -> str | None:
    """The caption statement for tables with tuned rows: the budget(s), how they were selected,
    and what the other rows are. None when no row is tuned."""
    budgets = tuned_budgets(df)
    if not budgets:
        return None
    same = f"budget {budgets[0]}" if len(budgets) == 1 else f"budgets {budgets}"
    return (
        f"Rows marked (tuned, budget N): each method tried N configurations of its declared "
        f"search space ({same}, the same N for every method) on the validation split; the best "
        "ran at every seed and was tested once per seed. Ties went to the smaller learning "
        "rate. Other rows use fixed hyperparameters: each method's defaults, --set values, or "
        "a protocol's pinned ones (the record's `hyperparameters.source`)."
    )


def tuning_markdown(records: list[dict[str, Any]]) -> list[str]:
    """The summary's "Hyperparameter search" section, or [] without searches."""
    searches = search_frame(records)
    counts = trial_counts(records)
    if searches.empty and not counts:
        return []
    lines = ["## Hyperparameter search", ""]
    if len(searches):
        shown = searches.drop(columns=["metric"]).copy()
        shown["val"] = shown["val"].map(lambda v: "—" if pd.isna(v) else f"{v:.2f}")
        lines += [to_markdown(shown), ""]
        lines += [
            "`val`: the selected trial's validation score (%) at its best epoch; `selected`: the "
            "searched values (base lr before the batch rule where `lr rule` is set), `lr used` "
            "the effective rate; `scored`: trials with a validation score (the rest diverged or "
            "ran out of memory).",
            "",
        ]
    lines.append(
        "Trial records: " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none")
        + (" (failed trials are retried by the next run)" if counts.get("failed") else "")
        + "."
    )  # fmt: skip
    lines.append("")
    return lines
