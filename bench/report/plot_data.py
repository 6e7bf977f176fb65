"""The figures' data: the `ok` runs of the long frame (`bench.report.frame`), averaged over
seeds within one (block, method, setting) as the summary tables do, with reliability bins
pooled over seeds."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from bench.metric_table import scale
from bench.report.frame import numeric
from bench.report.names import block_title as titled


def _full_data(shots: Any) -> bool:
    """None, NaN and 0 all mean "full training set", as in `summary.blocks`."""
    if shots is None:
        return True
    try:
        return bool(pd.isna(shots)) or int(shots) == 0
    except (TypeError, ValueError):
        return True


def block_title(dataset: str, shots: Any, backbone: str) -> str:
    """The block's title (`names.block_title`), for any spelling of "full data" shots; the
    figures' file names are slugs of it, which is how the report finds a block's figures."""
    return titled(dataset, 0 if _full_data(shots) else int(shots), backbone)


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """The `ok` rows with block keys: `_shots` (0 = full data) and `_backbone`."""
    if df is None or df.empty or "status" not in df.columns:
        return pd.DataFrame()
    ok = df[df["status"] == "ok"].copy()
    if ok.empty:
        return ok
    for col in ("dataset", "method", "backbone"):
        ok[col] = ok[col].astype(str) if col in ok.columns else "?"
    ok["setting"] = ok["setting"].astype(str) if "setting" in ok.columns else ""
    ok["_shots"] = [0 if _full_data(v) else int(v) for v in ok.get("shots", [None] * len(ok))]
    ok["_backbone"] = ok["backbone"]  # records_frame marks a random-init backbone in its name
    ok["demo"] = ok["demo"].fillna(False).astype(bool) if "demo" in ok.columns else False
    return ok


def pool_calibration(cals: Iterable[Any]) -> dict[str, np.ndarray] | None:
    """Pool reliability bins over seeds: counts summed, confidence and accuracy count-weighted.

    Calibrations with a different number of bins than the first are left out (they cannot be
    pooled bin by bin); empty bins come back with count 0 and NaN means.
    """
    valid = [c for c in cals if isinstance(c, dict) and c.get("count")]
    if not valid:
        return None
    n = len(valid[0]["count"])
    count = np.zeros(n)
    conf_sum = np.zeros(n)
    acc_sum = np.zeros(n)
    for cal in valid:
        if len(cal["count"]) != n:
            continue
        conf = cal.get("confidence") or [None] * n
        acc = cal.get("accuracy") or [None] * n
        for i, (k, cf, ac) in enumerate(zip(cal["count"], conf, acc, strict=False)):
            if not k or cf is None or ac is None or not (math.isfinite(cf) and math.isfinite(ac)):
                continue
            count[i] += k
            conf_sum[i] += k * cf
            acc_sum[i] += k * ac
    if count.sum() == 0:
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "count": count,
            "confidence": np.where(count > 0, conf_sum / count, np.nan),
            "accuracy": np.where(count > 0, acc_sum / count, np.nan),
        }


def aggregate(ok: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean over seeds per (keys, method, setting), never across settings. `label` is the method,
    with the setting hash added when one method has several settings for the same keys."""
    if ok.empty:
        return pd.DataFrame()
    ok = ok.assign(
        _primary=numeric(ok, "primary"),
        _pct=numeric(ok, "trainable_pct"),
        _mem=numeric(ok, "peak_train_mem_mb"),
        _train_s=numeric(ok, "train_s"),
        _img_s=numeric(ok, "train_img_s"),
        _train_gflops=numeric(ok, "train_gflops"),
        _ece=numeric(ok, "ece"),
    )
    rows = []
    for key, g in ok.groupby([*keys, "method", "setting"], sort=True):
        given = g["primary_metric"].dropna() if "primary_metric" in g else pd.Series(dtype=str)
        metric = str(given.mode().iloc[0]) if len(given) else "score"
        vals = g["_primary"].dropna() * scale(metric)
        source = g["memory_source"].dropna() if "memory_source" in g else pd.Series(dtype=str)
        rows.append(
            {
                **dict(zip([*keys, "method", "setting"], key, strict=True)),
                "metric": metric,
                # a figure drawn from any demo run is stamped as one (figure_io.save_figure)
                "demo": bool(g["demo"].any()),
                "n": len(vals),
                "mean": vals.mean() if len(vals) else np.nan,
                "std": vals.std(ddof=1) if len(vals) > 1 else np.nan,
                "trainable_pct": g["_pct"].mean(),
                "mem_mb": g["_mem"].mean(),
                "memory_source": str(source.mode().iloc[0]) if len(source) else None,
                "train_s": g["_train_s"].mean(),
                "img_s": g["_img_s"].mean(),
                "train_gflops": g["_train_gflops"].mean(),
                "ece_pct": g["_ece"].mean() * 100,
                "calibration": pool_calibration(g["calibration"])
                if "calibration" in g.columns
                else None,
            }
        )
    agg = pd.DataFrame(rows)
    n_settings = agg.groupby([*keys, "method"])["setting"].transform("nunique")
    agg["label"] = [
        m if k == 1 else f"{m} [{s}]"
        for m, s, k in zip(agg["method"], agg["setting"], n_settings, strict=True)
    ]
    return agg


def score_label(metrics: pd.Series) -> str:
    """The score axis: the metric's name, "(%)" when it is shown as a percentage."""
    names = sorted(set(metrics))
    name = names[0] if len(names) == 1 else "primary score"
    return f"{name} (%)" if scale(name) == 100 else name


def seeds_label(label: str, n: int) -> str:
    """A legend entry: the row's name and how many seeds its mean is over (kept on one line
    with no-break spaces)."""
    return f"{label}\u00a0·\u00a0{n}\u00a0seed{'s' if n != 1 else ''}"
