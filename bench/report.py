"""Records to tables: a long pandas frame, the per-setting summary, and `reports/summary.md`.

Reads only the JSON records; never imports a model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from bench.data import DEMO_NOTICE
from bench.records import write_atomic

TEST_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auc", "map", "qwk", "ece", "nll")


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
    from bench.tuning_report import is_trial, role, row_name

    rows = []
    for r in records:
        if r.get("kind") == "profile":  # `bench profile` records: bench.profile_report
            continue
        if is_trial(r):  # search trials have no test score: bench.tuning_report shows them
            continue
        cfg = r.get("config", {})
        tuned = role(cfg) == "final"
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
                # A tuned method is another row than its fixed-hyperparameter runs everywhere.
                "method": row_name(cfg) if tuned else cfg.get("method"),
                "method_name": cfg.get("method"),
                "regime": "tuned" if tuned else "fixed",
                "budget": cfg["tuning"].get("budget") if tuned else None,
                "seed": cfg.get("seed"),
                "shots": cfg.get("shots"),
                "split_seed": cfg.get("split_seed", 0),
                # A randomly initialised backbone is another model: its own block everywhere.
                "backbone": (cfg.get("backbone") or "")
                + (" (random init)" if cfg.get("pretrained") is False else ""),
                "pretrained": cfg.get("pretrained"),
                "img_size": cfg.get("img_size"),
                "epochs": cfg.get("epochs"),
                "batch_size": cfg.get("batch_size"),
                # --oom-retry may have trained the cell at a smaller batch than its config asks
                "batch_size_used": (r.get("training") or {}).get("batch_size_used")
                or cfg.get("batch_size"),
                "augment": cfg.get("augment"),
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
                "started_at": r.get("started_at"),
            }
        )
    frame = pd.DataFrame(rows)
    if "started_at" in frame:
        # Rows in the order the cells ran, so tables list methods as the user's --methods did
        # (file names would sort them alphabetically); records without a time keep their place.
        frame = frame.sort_values("started_at", kind="stable", na_position="last")
        frame = frame.reset_index(drop=True)
    numeric = ["primary", *TEST_METRICS, "trainable_pct", "trainable_pct_no_head",
               "peak_train_mem_mb", "peak_preload_mem_mb", "peak_eval_mem_mb", "train_s",
               "wall_s", "train_img_s"]  # fmt: skip
    for col in numeric:
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (block, method, setting): the score table's numbers (`tables.score_table`:
    mean ± std over seeds, failed cells counted, not dropped) beside the efficiency table's costs
    and the mean accuracy and ECE; what the terminal and summary.md show."""
    from bench import tables
    from bench.stats import prepare

    if df.empty:
        return pd.DataFrame()
    keys = ["block", "method", "setting"]
    scores = tables.score_table(df)
    costs = ["trainable_params", "trainable_pct", "peak_train_mem_mb", "train_s", "train_img_s"]
    out = scores.merge(tables.efficiency_table(df)[keys + costs], on=keys, how="left")
    group = ["dataset", "shots_key", "backbone", "method", "setting"]
    extra = prepare(df).assign(
        accuracy=pd.to_numeric(df["accuracy"], errors="coerce").to_numpy() * 100,
        ece=pd.to_numeric(df["ece"], errors="coerce").to_numpy() * 100,
        demo=df["demo"].astype(bool).to_numpy(),
    )
    ok = extra["status"] == "ok"
    means = extra[ok].groupby(group, sort=False)[["accuracy", "ece"]].mean()
    flags = extra.groupby(group, sort=False)[["demo"]].any()
    out["shots_key"] = out["shots"].fillna(0).astype(int)
    out = out.join(means, on=group).join(flags, on=group).drop(columns="shots_key")
    return out.rename(columns={"n_total": "seeds"})


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One (dataset, backbone) block of the summary formatted for people: `mean ± std` strings,
    rounded costs, short headers so it fits an 80-column terminal."""

    def fmt(v: Any, spec: str) -> str:
        return "—" if v is None or pd.isna(v) else format(v, spec)

    rows = []
    several = summary["method"].duplicated(keep=False).to_numpy()
    for i, (_, s) in enumerate(summary.iterrows()):
        score = fmt(s["mean"], ".2f") + ("" if pd.isna(s["std"]) else f" ± {s['std']:.2f}")
        name = s["method"] + (f" [{s['setting']}]" if several[i] else "")  # two settings
        row = {"method": name, "runs": s["status"], s["metric"]: score}
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
    """(title, display table) per block (dataset, shots, backbone), the unit results are
    compared in."""
    return [(title, display_table(part)) for title, part in summary.groupby("block", sort=False)]


def render_markdown(df: pd.DataFrame, records: list[dict[str, Any]] | None = None) -> str:
    from bench.coverage import lines as missing_lines
    from bench.coverage import missing_in_grid
    from bench.tuning_report import budget_note, tuning_markdown

    summary = summarize(df)
    lines = ["# medpeft-bench summary", ""]
    search = tuning_markdown(records or [])
    if df.empty:
        return "\n".join([*lines, "No records found.", "", *search])
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
    note = budget_note(df)
    if note:
        lines += [note, ""]
    lines += search
    bad = df[df["status"] != "ok"]
    if len(bad):
        lines += ["## Cells that did not finish", ""]
        lines += [f"- `{r.run_id}`: **{r.status}**: {r.error}" for r in bad.itertuples()]
        lines.append("")
    missing = missing_lines(missing_in_grid(df))
    if missing:
        lines += ["## Missing cells", "", MISSING_NOTE, ""]
        lines += [f"- {line}" for line in missing]
        lines.append("")
    return "\n".join(lines)


def write_summary(
    df: pd.DataFrame, out_dir: Path, records: list[dict[str, Any]] | None = None
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_atomic(out_dir / "summary.md", render_markdown(df, records))


class PaperParts(NamedTuple):
    """What both renderings of a paper's table show, computed once."""

    name: str
    protocol: Any
    shown: pd.DataFrame  # the table formatted: "12.34", "not run", "—"
    missing: pd.DataFrame  # bench.coverage.missing_in_protocol
    not_run: str  # "Cells not run yet: N of M"
    other: str  # records of its datasets and methods left out for other settings, or ""
    regime: str = "fixed"  # whose numbers `ours` shows: PAPER_REGIMES
    other_regime: str = ""  # records left out for the other regime, or ""


# `bench report --paper NAME --paper-regime`: the protocol's fixed hyperparameters (each
# method's defaults, or the paper's per-dataset rates where the protocol pins them), or the
# selected configurations of `bench run --protocol NAME --tune`.
PAPER_REGIMES = ("fixed", "tuned")


def _regime_rows(long: pd.DataFrame, regime: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows of `regime`, named by their method so the protocol matches them; the other rows)."""
    if regime not in PAPER_REGIMES:
        from bench.errors import UserError

        raise UserError(f"--paper-regime must be one of {', '.join(PAPER_REGIMES)}, not {regime!r}")
    if long.empty or "regime" not in long:
        return long, long.iloc[0:0]
    mine = long["regime"] == regime
    return long[mine].assign(method=long.loc[mine, "method_name"]), long[~mine]


def _paper_parts(name: str, long: pd.DataFrame, regime: str = "fixed") -> PaperParts:
    """The protocol, its formatted table, the cells of its grid with no record, and a note on
    records of its datasets and methods left out for being run with other settings or in the
    other regime (fixed vs tuned hyperparameters)."""
    from bench.coverage import missing_in_protocol
    from bench.protocols import get_protocol, paper_table, protocol_records

    protocol = get_protocol(name)
    long, elsewhere = _regime_rows(long, regime)
    other_regime = ""
    if len(elsewhere):
        n = int((elsewhere["dataset"].isin(protocol.datasets)
                 & elsewhere["method_name"].isin(protocol.methods)).sum())  # fmt: skip
        flip = "tuned" if regime == "fixed" else "fixed"
        if n:
            other_regime = (
                f"{n} record(s) of this protocol's datasets and methods have {flip} "
                f"hyperparameters and are left out (`--paper-regime {flip}` shows them)."
            )
    table = paper_table(protocol, long)
    mine = protocol_records(protocol, long)
    missing = missing_in_protocol(protocol, mine)
    n_missing = int(missing["n_missing"].sum()) if len(missing) else 0
    other = ""
    if len(long):
        candidates = long[long["dataset"].isin(protocol.datasets)
                          & long["method"].isin(protocol.methods)]  # fmt: skip
        n_other = len(candidates) - len(mine)
        if n_other:
            other = (
                f"{n_other} record(s) of this protocol's datasets and methods were run with other "
                f"settings and are left out: the table uses only backbone {protocol.backbone}, "
                f"input {protocol.img_size or 'native'} px, {protocol.epochs} epochs, batch "
                f"{protocol.batch_size}, augmentation {protocol.augment} "
                f"(`bench run --protocol {name}` runs exactly these)."
            )
    not_run = f"Cells not run yet: {n_missing} of {_protocol_size(protocol)}"
    return PaperParts(
        name, protocol, _paper_shown(table), missing, not_run, other, regime, other_regime
    )


def _paper_shown(table: pd.DataFrame) -> pd.DataFrame:
    shown = table.drop(columns=["ours"]).copy()
    for col in shown.columns[1:]:
        absent = "—" if col.endswith(" diff") else "not run"
        shown[col] = shown[col].map(lambda v, a=absent: a if pd.isna(v) else f"{v:.2f}")
    return shown


def render_paper_table(name: str, long: pd.DataFrame, regime: str = "fixed") -> str:
    """Markdown of a paper's table: published, reproduced and difference per column, then the
    protocol's cells with no record."""
    return _paper_markdown(_paper_parts(name, long, regime))


def _paper_markdown(parts: PaperParts) -> str:
    from bench.coverage import lines as missing_lines
    from bench.protocols import source_lines

    protocol = parts.protocol
    lines = [f"# {protocol.title}", "", f"Metric: {protocol.paper_metric_note}.", ""]
    lines += [parts.shown.to_markdown(index=False, disable_numparse=True), ""]
    lines += [_paper_legend(protocol, parts.regime), ""]
    for note in (parts.other, parts.other_regime):
        if note:
            lines += [note, ""]
    lines += [f"## {parts.not_run}", ""]
    lines += [f"- {line}" for line in missing_lines(parts.missing)] or [
        "None: the grid is complete."
    ]
    lines += ["", "## Sources", ""]
    lines += [f"- {line}" for line in source_lines(protocol)]
    return "\n".join(lines) + "\n"


REGIME_TEXT = {
    "fixed": "with fixed hyperparameters (each method's defaults, or the paper's own values "
    "where the protocol pins them)",
    "tuned": "with the configuration each method's search selected on validation (`bench run "
    "--protocol NAME --tune`; the budget is in the records)",
}


def _paper_legend(protocol, regime: str = "fixed") -> str:
    return (
        "`paper`: published; `ours`: mean over seeds and split seeds of this suite's ok "
        f"records run under the protocol (`{protocol.backbone}`) {REGIME_TEXT[regime]}; "
        "`diff` = ours - paper; `not run`: no record (or, for an average, not every cell it "
        "averages)."
    )


def _protocol_size(protocol) -> int:
    shots = len(protocol.shots) if protocol.shots else 1
    splits = len(protocol.split_seeds) if protocol.shots and protocol.split_seeds else 1
    return len(protocol.datasets) * shots * splits * len(protocol.methods) * len(protocol.seeds)


def render_paper_latex(name: str, long: pd.DataFrame, regime: str = "fixed") -> str:
    """The same table as booktabs LaTeX, one column group (paper, ours, diff) per published
    column."""
    return _paper_latex(_paper_parts(name, long, regime))


def _paper_latex(parts: PaperParts) -> str:
    from bench.tables import to_latex

    shown = parts.shown.copy()
    groups = [(c.rsplit(" ", 1)[0], 3) for c in shown.columns[1::3]]
    shown.columns = ["method", *(c.rsplit(" ", 1)[1] for c in shown.columns[1:])]
    notes = [
        f"Metric: {parts.protocol.paper_metric_note}.",
        _paper_legend(parts.protocol, parts.regime),
        f"{parts.not_run}.",
    ]
    notes += [n for n in (parts.other, parts.other_regime) if n]
    return to_latex(shown, caption=parts.protocol.title, label=f"tab:{parts.name}",
                    footnotes=notes, groups=[("", 1), *groups])  # fmt: skip


def write_paper_table(
    name: str, long: pd.DataFrame, out_dir: Path, regime: str = "fixed"
) -> list[Path]:
    """`paper-NAME.md` and `paper-NAME.tex` in `out_dir`, from one computation of the table."""
    parts = _paper_parts(name, long, regime)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"paper-{name}.md"
    write_atomic(md, _paper_markdown(parts))
    tex = out_dir / f"paper-{name}.tex"
    write_atomic(tex, _paper_latex(parts))
    return [md, tex]


def write_report(
    df: pd.DataFrame,
    out_dir: Path,
    *,
    plots: bool = True,
    baseline: str | None = None,
    profiles: pd.DataFrame | None = None,
    records: list[dict[str, Any]] | None = None,
) -> list[Path]:
    """Everything `bench report` renders: summary.md, the figures (PNG and PDF) and a
    self-contained index.html showing the tables and figures. Returns the files written.
    `baseline`: the method the paired tests compare against (default: `choose_baseline`).
    `records`: the records `df` came from, with search trials (the search section)."""
    from bench.coverage import lines as missing_lines
    from bench.coverage import missing_in_grid
    from bench.html_report import render_html
    from bench.plots import write_plots
    from bench.stats import slug

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [write_summary(df, out_dir, records)]
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
    missing = missing_lines(missing_in_grid(df))
    if missing:
        sections.append({"heading": "Missing cells", "html": "", "figures": [],
                         "notes": [MISSING_NOTE, *missing]})  # fmt: skip
    search, search_files = _search_section(records or [], out_dir, plots)
    sections += search
    written += search_files
    if not df.empty:
        table_sections, table_files = _write_tables(df, out_dir, baseline)
        sections = table_sections + sections
        written += table_files
    if profiles is not None and len(profiles):
        from bench.profile_report import NOTE, profile_tables

        parts = ["# bench profile", "", NOTE, ""]
        for title, table in profile_tables(profiles):
            parts += [f"## {title}", "", table.to_markdown(index=False, disable_numparse=True), ""]
            sections.append({"heading": f"Profile: {title}",
                             "html": table.to_html(index=False, border=0), "figures": [],
                             "notes": [NOTE]})  # fmt: skip
        path = out_dir / "profile.md"
        write_atomic(path, "\n".join(parts))
        written.append(path)
    notice = DEMO_NOTICE if not df.empty and bool(df["demo"].any()) else None
    index = out_dir / "index.html"
    write_atomic(index, render_html("medpeft-bench report", sections, notice=notice))
    written.append(index)
    return written


def _search_section(
    records: list[dict[str, Any]], out_dir: Path, plots: bool
) -> tuple[list[dict], list[Path]]:
    """The HTML section of the hyperparameter search (its table, the best-of-k figures) and the
    files written for it; nothing without searches."""
    from bench.plots import write_budget_plots
    from bench.tuning_report import curve_frame, search_frame, trial_counts
    from bench.tuning_select import TIE_RULE

    searches = search_frame(records)
    if searches.empty:
        return [], []
    figures = write_budget_plots(curve_frame(records), out_dir / "figures") if plots else []
    counts = trial_counts(records)
    notes = [
        "Each search tried the first `budget` configurations of its method's space in a "
        "seeded random order (the whole grid when it is smaller), scored on validation with the "
        f"test split sealed; {TIE_RULE}. The figure shows the best validation score among the "
        "first k trials: what a search of budget k would have selected on.",
        "Trial records: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + ".",
    ]
    section = {
        "heading": "Hyperparameter search",
        "html": searches.to_html(index=False, border=0, na_rep="—", float_format="{:.4g}".format),
        "figures": [f for f in figures if f.suffix == ".png"],
        "notes": notes,
    }
    return [section], figures


def _markdown_with_notes(table) -> str:
    """A `tables.Table` as a marked pipe table followed by its footnotes as a list."""
    from bench.tables import to_markdown

    notes = "\n".join(f"- {n}" for n in table.footnotes)
    return to_markdown(table.frame, table.ranks) + "\n\n" + notes


def _write_tables(
    df: pd.DataFrame, out_dir: Path, baseline: str | None
) -> tuple[list[dict], list[Path]]:
    """Scores (mean ± std, 95 % bootstrap CI) and efficiency (with the composite metrics) as
    markdown, LaTeX (booktabs) and CSV; statistics against a baseline; HTML sections of each."""
    from bench import stats, tables

    files: list[Path] = []
    from bench.tuning_report import budget_note, tuned_budgets

    scores = tables.score_table(df)
    wide = tables.wide_table(scores)
    eff = tables.efficiency_table(df)
    eff_shown = tables.efficiency_display(eff)
    tuned = budget_note(df)
    caption = "Test scores (mean ± std over seeds)"
    if tuned:
        # The budget belongs in the caption: a tuned row is only comparable at equal budgets.
        caption += (
            "; tuned rows: budget " + ", ".join(map(str, tuned_budgets(df))) + " on validation"
        )
        wide.footnotes.append(tuned)
        eff_shown.footnotes.append(tuned)
    outputs = {
        "scores.md": _markdown_with_notes(wide),
        "scores.tex": tables.to_latex(wide.frame, caption=caption,
                                      label="tab:scores", ranks=wide.ranks,
                                      footnotes=wide.footnotes),
        "scores.csv": tables.to_csv(scores),
        "efficiency.md": _markdown_with_notes(eff_shown),
        "efficiency.tex": tables.to_latex(eff_shown.frame, caption="Cost and composite scores",
                                          label="tab:efficiency", ranks=eff_shown.ranks,
                                          footnotes=eff_shown.footnotes),
        "efficiency.csv": tables.to_csv(eff),
    }  # fmt: skip
    baseline = baseline or choose_baseline(df)
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
        write_atomic(path, text)
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


# The default baseline of the paired tests: the first of these that the records have.
BASELINES = ("full", "linear")
MISSING_NOTE = (
    "Cells with no record at all, against the grid the records imply: in each block every "
    "method run on that backbone, for every (split seed, seed) any method ran there. Run the "
    "same `bench run` command again to fill them."
)


def choose_baseline(df: pd.DataFrame, wanted: str | None = None) -> str | None:
    """The paired tests' baseline: `wanted` (a UserError when no record has it), else the first
    of BASELINES present, else None (no tests)."""
    methods = set(df["method"]) if not df.empty else set()
    if wanted is None:
        # A fixed-hyperparameter baseline first, else its tuned rows (a tune-only folder).
        tuned = {m.split(" (tuned", 1)[0]: m for m in sorted(methods) if " (tuned" in m}
        return next((m for m in BASELINES if m in methods), None) or next(
            (tuned[m] for m in BASELINES if m in tuned), None
        )
    if wanted not in methods:
        from bench.errors import UserError

        raise UserError(
            f"--baseline {wanted}: no record of that method; methods in the report: "
            + (", ".join(sorted(methods)) or "none")
        )
    return wanted
