"""Figures from the long records frame (`bench.report.frame`): PNG and PDF per figure.

One figure per block (dataset, shots, backbone) for score vs trainable %, score vs peak memory,
score vs training GFLOPs per image, training time and reliability diagrams; one score-vs-shots figure per (dataset, backbone) that
was run at more than one shot count. Only `ok` runs are drawn (the tables list the others), and
runs are averaged only within one (method, setting), as the summary tables do.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

# A report is written on servers and in CI: never ask for a display.
matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from bench.metric_table import LOWER_IS_BETTER, scale
from bench.report.figure_io import save_figure
from bench.report.frame import numeric
from bench.report.names import block_title as titled
from bench.report.names import slug, unique
from bench.report.stats import pareto_front


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


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
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
    return ok


def _pool_calibration(cals: Iterable[Any]) -> dict[str, np.ndarray] | None:
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


def _aggregate(ok: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
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
        rows.append(
            {
                **dict(zip([*keys, "method", "setting"], key, strict=True)),
                "metric": metric,
                "n": len(vals),
                "mean": vals.mean() if len(vals) else np.nan,
                "std": vals.std(ddof=1) if len(vals) > 1 else np.nan,
                "trainable_pct": g["_pct"].mean(),
                "mem_mb": g["_mem"].mean(),
                "train_s": g["_train_s"].mean(),
                "img_s": g["_img_s"].mean(),
                "train_gflops": g["_train_gflops"].mean(),
                "ece_pct": g["_ece"].mean() * 100,
                "calibration": _pool_calibration(g["calibration"])
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


def _score_label(metrics: pd.Series) -> str:
    names = sorted(set(metrics))
    name = names[0] if len(names) == 1 else "primary score"
    return f"{name} (%)" if scale(name) == 100 else name


def _errorbar(ax: Any, x: float, row: pd.Series, color: Any) -> None:
    yerr = None if pd.isna(row["std"]) else row["std"]
    ax.errorbar(x, row["mean"], yerr=yerr, fmt="o", ms=7, capsize=3, color=color, zorder=3)
    ax.annotate(
        row["label"], (x, row["mean"]), xytext=(5, 5), textcoords="offset points", fontsize=9
    )


def _log_if_wide(ax: Any, x: np.ndarray) -> None:
    x = x[np.isfinite(x) & (x > 0)]
    if len(x) and x.max() / x.min() > 20:
        ax.set_xscale("log")


def _pareto_scatter(pts: pd.DataFrame, x: str, colors: dict[str, Any]) -> tuple[Any, Any]:
    """Each setting's mean score (± std) against its cost `x`, and the Pareto front over them:
    the settings no other beats on both cost and score."""
    fig, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
    for _, row in pts.iterrows():
        _errorbar(ax, row[x], row, colors[row["method"]])
    lower = pts["metric"].iloc[0] in LOWER_IS_BETTER
    score = -pts["mean"] if lower else pts["mean"]
    front = pts[pareto_front(pts[x], score)].sort_values([x, "mean"])
    ax.plot(
        front[x],
        front["mean"],
        drawstyle="steps-post",
        color="0.3",
        ls="--",
        lw=1.2,
        zorder=2,
        label="Pareto front",
    )
    ax.set_ylabel(_score_label(pts["metric"]))
    ax.legend(loc="lower right")
    return fig, ax


def _fig_params(agg: pd.DataFrame, title: str, colors: dict[str, Any]) -> Any | None:
    pts = agg[np.isfinite(agg["trainable_pct"]) & (agg["trainable_pct"] > 0)]
    pts = pts[np.isfinite(pts["mean"])]
    if pts.empty:
        return None
    fig, ax = _pareto_scatter(pts, "trainable_pct", colors)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (% of backbone, log scale)")
    ax.set_title(f"{title}: score vs trainable parameters")
    return fig


def _fig_flops(agg: pd.DataFrame, title: str, colors: dict[str, Any]) -> Any | None:
    pts = agg[np.isfinite(agg["train_gflops"]) & (agg["train_gflops"] > 0)]
    pts = pts[np.isfinite(pts["mean"])]
    if pts.empty:  # records from before FLOPs were counted
        return None
    fig, ax = _pareto_scatter(pts, "train_gflops", colors)
    # A head trained on cached features costs a millionth of full fine-tuning per step.
    _log_if_wide(ax, pts["train_gflops"].to_numpy())
    scale = ", log scale" if ax.get_xscale() == "log" else ""
    ax.set_xlabel(f"training compute per image (GFLOPs of one forward and backward{scale})")
    ax.set_title(f"{title}: score vs training compute")
    return fig


def _fig_memory(agg: pd.DataFrame, title: str, colors: dict[str, Any]) -> Any | None:
    pts = agg[np.isfinite(agg["mem_mb"]) & np.isfinite(agg["mean"])]
    if pts.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
    for _, row in pts.iterrows():
        _errorbar(ax, row["mem_mb"], row, colors[row["method"]])
    _log_if_wide(ax, pts["mem_mb"].to_numpy())
    ax.set_xlabel("memory used while training (MB)")
    ax.set_ylabel(_score_label(pts["metric"]))
    ax.set_title(f"{title}: score vs training memory")
    return fig


def _fig_time(agg: pd.DataFrame, title: str, colors: dict[str, Any]) -> Any | None:
    pts = agg[np.isfinite(agg["train_s"])].sort_values("train_s")
    if pts.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.5 * len(pts)), layout="constrained")
    y = np.arange(len(pts))
    ax.barh(y, pts["train_s"], color=[colors[m] for m in pts["method"]])
    ax.set_yticks(y, pts["label"])
    ax.invert_yaxis()  # fastest on top
    for yi, (t, ips) in enumerate(zip(pts["train_s"], pts["img_s"], strict=True)):
        text = "— img/s" if pd.isna(ips) else f"{ips:.0f} img/s"
        ax.annotate(f" {text}", (t, yi), va="center", fontsize=9)
    ax.set_xlim(0, pts["train_s"].max() * 1.3)
    ax.set_xlabel("training time (s, mean over seeds)")
    ax.set_title(f"{title}: training time")
    return fig


def _fig_reliability(agg: pd.DataFrame, title: str) -> Any | None:
    pts = agg[[c is not None for c in agg["calibration"]]]
    if pts.empty:
        return None
    ncol = min(4, len(pts))
    nrow = math.ceil(len(pts) / ncol)
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(3.2 * ncol, 3.3 * nrow + 0.4), squeeze=False, layout="constrained"
    )
    for ax, (_, row) in zip(axes.flat, pts.iterrows(), strict=False):
        cal = row["calibration"]
        n = len(cal["count"])
        centers = (np.arange(n) + 0.5) / n
        has = cal["count"] > 0
        acc, conf = cal["accuracy"][has], cal["confidence"][has]
        ax.bar(centers[has], acc, width=1 / n, edgecolor="0.2", lw=0.6, label="accuracy")
        # The gap between mean confidence and accuracy per bin: what ECE sums up.
        ax.bar(
            centers[has],
            np.abs(conf - acc),
            bottom=np.minimum(conf, acc),
            width=1 / n,
            color="tab:red",
            alpha=0.3,
            hatch="//",
            edgecolor="tab:red",
            lw=0.4,
            label="gap to confidence",
        )
        ax.plot([0, 1], [0, 1], ls="--", color="0.4", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", xlabel="confidence", ylabel="accuracy")
        ece = "—" if pd.isna(row["ece_pct"]) else f"{row['ece_pct']:.2f}%"
        ax.set_title(f"{row['label']}\nECE {ece}", fontsize=10)
    for ax in axes.flat[len(pts) :]:
        ax.set_visible(False)
    axes.flat[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{title}: reliability (test split, bins pooled over seeds)")
    return fig


def _fig_shots(agg: pd.DataFrame, title: str, colors: dict[str, Any]) -> Any | None:
    pts = agg[np.isfinite(agg["mean"])]
    shots = sorted(set(pts["_shots"]), key=lambda k: (k == 0, k))  # full data last
    if len(shots) < 2:
        return None
    pos = {k: i for i, k in enumerate(shots)}
    fig, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
    for label, line in pts.groupby("label", sort=True):
        line = line.sort_values("_shots", key=lambda s: s.map(pos))
        yerr = line["std"].fillna(0).to_numpy()
        ax.errorbar(
            line["_shots"].map(pos),
            line["mean"],
            yerr=yerr,
            marker="o",
            capsize=3,
            label=label,
            color=colors[line["method"].iloc[0]],
        )
    ax.set_xticks(range(len(shots)), ["full" if k == 0 else str(k) for k in shots])
    ax.set_xlabel("shots per class")
    ax.set_ylabel(_score_label(pts["metric"]))
    ax.set_title(f"{title}: score vs shots")
    ax.legend(fontsize=9)
    return fig


def write_plots(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write every figure as PNG and PDF under `out_dir`; return the paths (PNG, then PDF, per
    figure). Nothing to draw (no records, no ok run) writes nothing and returns []."""
    ok = _prepare(df)
    if ok.empty:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    methods = sorted(set(ok["method"]))
    palette = sns.color_palette("colorblind", len(methods))
    colors = dict(zip(methods, palette, strict=True))  # one colour per method in every figure
    written: list[Path] = []
    taken: set[str] = set()

    def emit(kind: str, name: str, make: Any) -> None:
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
            fig = make()
        if fig is not None:
            written.extend(save_figure(fig, out_dir, unique(f"{kind}-{slug(name)}", taken)))

    keys = ["dataset", "_shots", "_backbone"]
    agg = _aggregate(ok, keys)
    for (dataset, shots, backbone), block in agg.groupby(keys, sort=True):
        title = block_title(dataset, shots, backbone)
        emit("score_vs_params", title, lambda b=block, t=title: _fig_params(b, t, colors))
        emit("score_vs_memory", title, lambda b=block, t=title: _fig_memory(b, t, colors))
        emit("score_vs_train_flops", title, lambda b=block, t=title: _fig_flops(b, t, colors))
        emit("train_time", title, lambda b=block, t=title: _fig_time(b, t, colors))
        emit("reliability", title, lambda b=block, t=title: _fig_reliability(b, t))
    for (dataset, backbone), grid in agg.groupby(["dataset", "_backbone"], sort=True):
        if grid["_shots"].nunique() > 1:
            title = f"{dataset} · {backbone}"
            emit("score_vs_shots", title, lambda g=grid, t=title: _fig_shots(g, t, colors))
    return written


def write_budget_plots(curves: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Per block, the best validation score among the first k trials against k, one line per
    method and budget (split seeds averaged): how much each method gains from its budget."""
    if curves.empty or curves["best_val"].isna().all():
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    taken: set[str] = set()
    curves = curves.assign(line=[f"{m} (budget {b})" for m, b in
                                 zip(curves["method"], curves["budget"], strict=True)])  # fmt: skip
    for block, part in curves.groupby("block", sort=True):
        mean = part.groupby(["line", "k"], sort=True)["best_val"].mean().reset_index()
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
            fig, ax = plt.subplots(figsize=(6.4, 4.0))
            sns.lineplot(data=mean, x="k", y="best_val", hue="line", marker="o", ax=ax,
                         palette="colorblind")  # fmt: skip
            ax.set_xlabel("trials (budget k)")
            ax.set_ylabel(f"best validation {part['metric'].iloc[0]} so far")
            ax.set_title(f"{block}: search budget")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.legend(title=None, fontsize="small")
            fig.tight_layout()
        written += save_figure(fig, out_dir, unique(f"budget-{slug(block)}", taken))
    return written
