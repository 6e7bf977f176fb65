"""Records to tables: a long pandas frame, the per-setting summary, and `reports/summary.md`.

Reads only the JSON records; never imports a model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from bench.data import DEMO_NOTICE

TEST_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auc", "map", "qwk", "ece", "nll")
# Metrics shown in percent (they are fractions in the records).
PERCENT = ("accuracy", "balanced_accuracy", "macro_f1", "auc", "map", "ece", "qwk")


def _setting(cfg: dict[str, Any]) -> str:
    """Hash of everything but the seeds: records are only ever averaged within one setting. A
    few-shot setting pools its split seeds with its training seeds, as the papers average over
    samplings and runs."""
    rest = {k: v for k, v in cfg.items() if k not in ("seed", "split_seed")}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _memory_mb(mem: dict[str, Any] | None) -> float | None:
    if not mem:
        return None
    for key in ("peak_allocated_mb", "peak_rss_mb"):
        if mem.get(key) is not None:
            return float(mem[key])
    return None


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per record (the long frame every table and plot reads); test metrics are
    fractions, NaN where a record has none."""
    rows = []
    for r in records:
        cfg = r.get("config", {})
        metrics = r.get("metrics") or {}
        test = metrics.get("test", {})
        cost = r.get("cost") or {}
        params = r.get("params") or {}
        memory = cost.get("memory") or {}
        rows.append(
            {
                "run_id": r["run_id"],
                "status": r.get("status"),
                "error": r.get("error"),
                "dataset": cfg.get("dataset"),
                "method": cfg.get("method"),
                "seed": cfg.get("seed"),
                "shots": cfg.get("shots"),
                "split_seed": cfg.get("split_seed", 0),
                "backbone": cfg.get("backbone"),
                "pretrained": cfg.get("pretrained"),
                "img_size": cfg.get("img_size"),
                "epochs": cfg.get("epochs"),
                "device": cfg.get("device"),
                "setting": _setting(cfg),
                "demo": bool(r.get("demo")),
                "primary_metric": metrics.get("primary_metric")
                or (r.get("dataset") or {}).get("primary_metric"),
                "primary": metrics.get("primary"),
                **{k: test.get(k) for k in TEST_METRICS},
                "trainable_params": params.get("trainable_params"),
                "trainable_pct": params.get("trainable_pct"),
                "trainable_pct_no_head": params.get("trainable_pct_no_head"),
                "peak_train_mem_mb": _memory_mb(memory.get("train")),
                "peak_preload_mem_mb": _memory_mb(memory.get("preload")),
                "peak_eval_mem_mb": _memory_mb(memory.get("eval")),
                "memory_source": (memory.get("train") or {}).get("memory_source"),
                "train_s": (cost.get("phases_s") or {}).get("train"),
                "wall_s": cost.get("wall_s"),
                "train_img_s": (cost.get("train_step") or {}).get("throughput_img_s"),
                "calibration": metrics.get("calibration"),
            }
        )
    frame = pd.DataFrame(rows)
    numeric = ["primary", *TEST_METRICS, "trainable_pct", "trainable_pct_no_head",
               "peak_train_mem_mb", "peak_preload_mem_mb", "peak_eval_mem_mb", "train_s",
               "wall_s", "train_img_s"]  # fmt: skip
    for col in numeric:
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean +- std over seeds per (dataset, method, setting); failed cells are counted, not dropped."""
    if df.empty:
        return pd.DataFrame()
    out = []
    for _, g in df.groupby(["dataset", "setting", "method"], sort=False):
        ok = g[g["status"] == "ok"]
        first = g.iloc[0]
        metric = first["primary_metric"]
        scale = 100.0 if metric in PERCENT else 1.0
        vals = ok["primary"].dropna().astype(float) * scale
        statuses = ", ".join(f"{n} {s}" for s, n in g["status"].value_counts().items())
        out.append(
            {
                "dataset": first["dataset"],
                "shots": first["shots"],
                "method": first["method"],
                "backbone": first["backbone"] + ("" if first["pretrained"] else " (random init)"),
                "seeds": len(g),
                "status": statuses,
                "metric": metric,
                "mean": vals.mean() if len(vals) else float("nan"),
                "std": vals.std(ddof=1) if len(vals) > 1 else float("nan"),
                "accuracy": ok["accuracy"].astype(float).mean() * 100 if len(ok) else float("nan"),
                "ece": ok["ece"].astype(float).mean() * 100 if len(ok) else float("nan"),
                "trainable_params": first["trainable_params"]
                if pd.notna(first["trainable_params"])
                else None,
                "trainable_pct": first["trainable_pct"],
                "peak_train_mem_mb": ok["peak_train_mem_mb"].astype(float).mean()
                if len(ok)
                else float("nan"),
                "train_s": ok["train_s"].astype(float).mean() if len(ok) else float("nan"),
                "train_img_s": ok["train_img_s"].astype(float).mean() if len(ok) else float("nan"),
                "demo": bool(g["demo"].any()),
                "setting": first["setting"],
            }
        )
    return pd.DataFrame(out)


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One (dataset, backbone) block of the summary formatted for people: `mean ± std` strings,
    rounded costs, short headers so it fits an 80-column terminal."""

    def fmt(v: Any, spec: str) -> str:
        return "—" if v is None or pd.isna(v) else format(v, spec)

    rows = []
    for _, s in summary.iterrows():
        score = fmt(s["mean"], ".2f") + ("" if pd.isna(s["std"]) else f" ± {s['std']:.2f}")
        row = {"method": s["method"], "runs": s["status"], s["metric"]: score}
        if s["metric"] != "accuracy":
            row["acc %"] = fmt(s["accuracy"], ".2f")
        row.update(
            {
                "ECE %": fmt(s["ece"], ".2f"),
                "train %": fmt(s["trainable_pct"], ".3g"),
                "peak MB": fmt(s["peak_train_mem_mb"], ".0f"),
                "train s": fmt(s["train_s"], ".1f"),
                "img/s": fmt(s["train_img_s"], ".0f"),
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def blocks(summary: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, display table) per dataset and backbone, the unit results are compared in."""
    from bench.stats import block_title

    out = []
    shots = summary["shots"].fillna(0).astype(int)
    for (dataset, k, backbone), part in summary.groupby(
        [summary["dataset"], shots, summary["backbone"]], sort=False
    ):
        out.append((block_title(dataset, k, backbone), display_table(part)))
    return out


def render_markdown(df: pd.DataFrame) -> str:
    summary = summarize(df)
    lines = ["# medpeft-bench summary", ""]
    if df.empty:
        return "\n".join([*lines, "No records found.", ""])
    if bool(df["demo"].any()):
        lines += [f"> **{DEMO_NOTICE}.**", ""]
    for title, table in blocks(summary):
        lines += [f"## {title}", "", table.to_markdown(index=False, disable_numparse=True), ""]
    lines += [
        "Scores are test-split percentages, evaluated once with the epoch selected on validation; "
        "mean ± std over seeds, few-shot split seeds pooled in (sample std). `train %`: trainable parameters as a percentage of the "
        "backbone without its head. `img/s`: steady-state training throughput. Peak memory: "
        + ", ".join(sorted(set(df["memory_source"].dropna())))
        + ".",
        "",
    ]
    bad = df[df["status"] != "ok"]
    if len(bad):
        lines += ["## Cells that did not finish", ""]
        lines += [f"- `{r.run_id}`: **{r.status}**: {r.error}" for r in bad.itertuples()]
        lines.append("")
    return "\n".join(lines)


def write_summary(df: pd.DataFrame, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "summary.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(render_markdown(df))
    tmp.replace(path)
    return path


def render_paper_table(name: str, long: pd.DataFrame) -> str:
    """Markdown of a paper's table: published, reproduced and difference per column."""
    from bench.protocols import get_protocol, paper_table, source_lines

    protocol = get_protocol(name)
    table = paper_table(protocol, long)
    shown = table.drop(columns=["ours"]).copy()
    for col in shown.columns[1:]:
        shown[col] = shown[col].map(lambda v: "not run" if pd.isna(v) else f"{v:.2f}")
    lines = [f"# {protocol.title}", "", f"Metric: {protocol.paper_metric_note}.", ""]
    lines += [shown.to_markdown(index=False, disable_numparse=True), ""]
    lines += [
        "`paper`: published; `ours`: mean over seeds and split seeds of this suite's ok "
        f"records on `{protocol.backbone}`; `diff` = ours - paper; `not run`: no record "
        "(or, for an average, not every cell it averages).",
        "",
        "Sources:",
        "",
    ]
    lines += [f"- {line}" for line in source_lines(protocol)]
    return "\n".join(lines) + "\n"


def write_paper_table(name: str, long: pd.DataFrame, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"paper-{name}.md"
    path.write_text(render_paper_table(name, long))
    return path


def write_report(df: pd.DataFrame, out_dir: Path, *, plots: bool = True) -> list[Path]:
    """Everything `bench report` renders: summary.md, the figures (PNG and PDF) and a
    self-contained index.html showing the tables and figures. Returns the files written."""
    from bench.html_report import render_html
    from bench.plots import slug, write_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [write_summary(df, out_dir)]
    figures = write_plots(df, out_dir / "figures") if plots and not df.empty else []
    written += figures
    pngs = [f for f in figures if f.suffix == ".png"]
    sections = []
    summary = summarize(df)
    for title, table in blocks(summary) if not df.empty else []:
        key = slug(title)  # the plots name their files `<kind>-<slug of the block title>`
        sections.append(
            {
                "heading": title,
                "html": table.to_html(index=False, border=0, na_rep="—"),
                "figures": [f for f in pngs if f.stem.split("-", 1)[1] == key],
                "notes": [],
            }
        )
    shots_figures = [f for f in pngs if f.stem.startswith("score_vs_shots")]
    if shots_figures:
        sections.append({"heading": "Score vs shots", "html": "", "figures": shots_figures,
                         "notes": []})  # fmt: skip
    bad = df[df["status"] != "ok"] if not df.empty else df
    if len(bad):
        items = [f"{r.run_id}: {r.status}: {r.error}" for r in bad.itertuples()]
        sections.append({"heading": "Cells that did not finish", "html": "", "figures": [],
                         "notes": items})  # fmt: skip
    if not df.empty:
        table_sections, table_files = _write_tables(df, out_dir)
        sections = table_sections + sections
        written += table_files
    notice = DEMO_NOTICE if not df.empty and bool(df["demo"].any()) else None
    index = out_dir / "index.html"
    index.write_text(render_html("medpeft-bench report", sections, notice=notice))
    written.append(index)
    return written


def _write_tables(df: pd.DataFrame, out_dir: Path) -> tuple[list[dict], list[Path]]:
    """Scores (mean ± std, 95 % bootstrap CI) and efficiency (with the composite metrics) as
    markdown, LaTeX (booktabs) and CSV; statistics against a baseline; HTML sections of each."""
    from bench import stats, tables

    files: list[Path] = []
    scores = tables.score_table(df)
    wide = tables.wide_table(scores)
    eff = tables.efficiency_table(df)
    eff_shown = tables.efficiency_display(eff)
    outputs = {
        "scores.md": tables.to_markdown(wide.frame, wide.ranks)
        + "\n\n" + "\n".join(f"- {n}" for n in wide.footnotes),
        "scores.tex": tables.to_latex(wide.frame, caption="Test scores (mean ± std over seeds)",
                                      label="tab:scores", ranks=wide.ranks,
                                      footnotes=wide.footnotes),
        "scores.csv": tables.to_csv(scores),
        "efficiency.md": tables.to_markdown(eff_shown.frame, eff_shown.ranks)
        + "\n\n" + "\n".join(f"- {n}" for n in eff_shown.footnotes),
        "efficiency.tex": tables.to_latex(eff_shown.frame, caption="Cost and composite scores",
                                          label="tab:efficiency", ranks=eff_shown.ranks,
                                          footnotes=eff_shown.footnotes),
        "efficiency.csv": tables.to_csv(eff),
    }  # fmt: skip
    baseline = next((m for m in BASELINES if m in set(df["method"])), None)
    notes = [tables.COMPOSITE_FOOTNOTE]
    stats_html = ""
    if baseline is not None:
        paired = stats.paired_vs_baseline(df, baseline)
        ranks = stats.average_ranks(df)
        outputs["stats.md"] = (
            f"# Paired comparison against {baseline}\n\n"
            + paired.to_markdown(index=False) + f"\n\n{stats.CORRECTION}\n\n# Average rank\n\n"
            + ranks.to_markdown(index=False) + "\n"
        )  # fmt: skip
        stats_html = (
            f"<h3>Wilcoxon signed-rank against {baseline}</h3>"
            + paired.to_html(index=False, border=0, na_rep="—")
            + "<h3>Average rank</h3>"
            + ranks.to_html(index=False, border=0, na_rep="—")
        )
        notes.append(stats.CORRECTION)
    for name, text in outputs.items():
        path = out_dir / name
        path.write_text(text)
        files.append(path)
    sections = [
        {"heading": "Scores", "html": wide.frame.to_html(index=False, border=0, na_rep="—"),
         "figures": [], "notes": list(wide.footnotes)},
        {"heading": "Efficiency", "html": eff_shown.frame.to_html(index=False, border=0,
                                                                  na_rep="—"),
         "figures": [], "notes": list(eff_shown.footnotes)},
        {"heading": "Statistics", "html": stats_html, "figures": [], "notes": notes},
    ]  # fmt: skip
    return sections, files


# The baseline of the paired tests: the first of these that the records have.
BASELINES = ("full", "linear")
