"""Everything `bench report` writes into its folder: tables, statistics, figures, index.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from bench.demo import DEMO_NOTICE
from bench.records import write_atomic
from bench.report.captions import caption
from bench.report.conditions import timing_note
from bench.report.demo_mark import demo_caption, demo_markdown, is_demo, with_demo_column
from bench.report.efficiency import efficiency_display, efficiency_parts, efficiency_table
from bench.report.formats import fmt, to_csv, to_latex, to_latex_tables, to_markdown
from bench.report.html import render_html
from bench.report.missing import MISSING_NOTE, missing_in_grid
from bench.report.missing import lines as missing_lines
from bench.report.names import slug
from bench.report.profile import NOTE, profile_tables
from bench.report.stats import choose_baseline
from bench.report.summary import blocks, summarize, summary_marks, write_summary
from bench.report.tables import Table, score_table, wide_table
from bench.report.tuning import budget_note, curve_frame, search_frame, trial_counts, tuned_budgets
from bench.tuning_select import TIE_RULE

Section = dict[str, Any]  # a section of the page, as `bench.report.html.render_html` takes it


def write_report(
    df: pd.DataFrame,
    out_dir: Path,
    *,
    plots: bool = True,
    baseline: str | None = None,
    profiles: pd.DataFrame | None = None,
    records: list[dict[str, Any]] | None = None,
    hide_times: bool = False,
    sections: list[Section] | None = None,
) -> list[Path]:
    """Everything `bench report` renders: summary.md, the figures (PNG and PDF) and a
    self-contained index.html showing the tables and figures. Returns the files written.
    `baseline`: the method the paired tests compare against (default: `choose_baseline`).
    `records`: the records `df` came from, with search trials (the search section).
    `hide_times`: tables whose timings are not comparable show none
    (`bench.report.conditions`). `sections`: more sections of the page (a paper's table, say),
    placed after the score, efficiency and statistics tables. Every file made from demo
    records says so (`bench.report.demo_mark`)."""
    # matplotlib takes a second to import: only a report with figures pays for it.
    from bench.report.plots import write_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    demo = is_demo(df)
    written = [write_summary(df, out_dir, records, hide_times=hide_times)]
    figures = write_plots(df, out_dir / "figures") if plots and not df.empty else []
    written += figures
    page: list[Section] = []
    if not df.empty:
        table_sections, table_files = _write_tables(df, out_dir, baseline, hide_times)
        stats_sections, stats_files = _write_stats(df, out_dir, baseline, plots)
        page += table_sections + stats_sections
        written += table_files + stats_files
    page += sections or []
    page += _block_sections(df, [f for f in figures if f.suffix == ".png"], hide_times)
    search, search_files = _search_section(records or [], out_dir, plots)
    page += search
    written += search_files
    if profiles is not None and len(profiles):
        profile_sections, profile_file = _write_profiles(profiles, out_dir, hide_times, demo)
        page += profile_sections
        written.append(profile_file)
    index = out_dir / "index.html"
    notice = DEMO_NOTICE if demo else None
    write_atomic(index, render_html("medpeft-bench report", page, notice=notice, caption=caption))
    written.append(index)
    return written


def _block_sections(df: pd.DataFrame, pngs: list[Path], hide_times: bool) -> list[Section]:
    """The summary per block with its figures, the score-vs-shots figures, and the cells that
    did not finish or have no record."""
    out = []
    for title, table, notes in blocks(summarize(df), hide_times=hide_times) if len(df) else []:
        key = slug(title)  # the plots name their files `<kind>-<slug of the block title>`
        figures = [f for f in pngs if f.stem.split("-", 1)[1] == key]
        out.append({"heading": title, "tables": [("", table, summary_marks(table))], "figures": figures,
                    "notes": notes})  # fmt: skip
    shots_figures = [f for f in pngs if f.stem.startswith("score_vs_shots")]
    if shots_figures:
        out.append({"heading": "Score vs shots", "figures": shots_figures})
    bad = df[df["status"] != "ok"] if len(df) else df
    if len(bad):
        items = [f"{r.run_id}: {r.status}: {r.error}" for r in bad.itertuples()]
        out.append({"heading": "Cells that did not finish", "notes": items})
    missing = missing_lines(missing_in_grid(df))
    if missing:
        out.append({"heading": "Missing cells", "notes": [MISSING_NOTE, *missing]})
    return out


def _write_profiles(
    profiles: pd.DataFrame, out_dir: Path, hide_times: bool, demo: bool
) -> tuple[list[Section], Path]:
    """profile.md and a section of the page per measurement group."""
    parts = ["# bench profile", "", NOTE, ""]
    sections = []
    for i, (title, table, notes) in enumerate(profile_tables(profiles, hide_times=hide_times)):
        parts += [f"## {title}", "", to_markdown(table), ""]
        parts += [line for note in notes for line in (note, "")]
        sections.append({"heading": f"Profile: {title}", "tables": [("", table)],
                         "notes": [NOTE, *notes] if i == 0 else notes})  # fmt: skip
    path = out_dir / "profile.md"
    write_atomic(path, demo_markdown("\n".join(parts), demo))
    return sections, path


def _search_display(searches: pd.DataFrame) -> pd.DataFrame:
    """`search_frame` for the page: the budget beside the space's size, trials scored of those
    run, the rates as numbers of three digits; the `lr rule` only when a search had one."""
    budget = [
        f"{b} of {n}" if pd.notna(n) else str(b)
        for b, n in zip(searches["budget"], searches["space"], strict=True)
    ]
    shown = pd.DataFrame(
        {
            "block": searches["block"],
            "method": searches["method"],
            "split": searches["split_seed"],
            "budget": budget,
            "mode": searches["mode"],
            "scored": searches["scored"].astype(str) + " of " + searches["trials"].astype(str),
            "selected": searches["selected"],
            "lr used": [fmt(v, ".3g") for v in searches["lr used"]],
            "val %": [fmt(v, ".2f") for v in searches["val"]],
            "metric": searches["metric"],
        }
    )
    if searches["lr rule"].astype(bool).any():
        shown["lr rule"] = searches["lr rule"]
    return shown


def _search_section(
    records: list[dict[str, Any]], out_dir: Path, plots: bool
) -> tuple[list[Section], list[Path]]:
    """The HTML section of the hyperparameter search (its table, the best-of-k figures) and the
    files written for it; nothing without searches."""
    from bench.report.plots import write_budget_plots  # matplotlib: as in write_report

    searches = search_frame(records)
    if searches.empty:
        return [], []
    demo = any(bool(r.get("demo")) for r in records)
    figures = (
        write_budget_plots(curve_frame(records), out_dir / "figures", demo=demo) if plots else []
    )
    counts = trial_counts(records)
    notes = [
        "Each search tried the first `budget` configurations of its method's space (budget "
        "of the space's size) in a seeded random order (the whole grid when it is smaller), "
        f"scored on validation with the test split sealed; {TIE_RULE}. `scored`: trials with a "
        "validation score; `val %`: the selected trial's. The figure shows the best validation "
        "score among the first k trials: what a search of budget k would have selected on.",
        "Trial records: "
        + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none")
        + ".",
    ]
    section = {
        "heading": "Hyperparameter search",
        "tables": [("", _search_display(searches))],
        "figures": [f for f in figures if f.suffix == ".png"],
        "notes": notes,
    }
    return [section], figures


def _markdown_with_notes(table: Table) -> str:
    """A `Table` as a marked pipe table followed by its footnotes as a list."""
    notes = "\n".join(f"- {n}" for n in table.footnotes)
    return to_markdown(table.frame, table.ranks) + "\n\n" + notes


def _write_tables(
    df: pd.DataFrame, out_dir: Path, baseline: str | None, hide_times: bool
) -> tuple[list[Section], list[Path]]:
    """Scores (mean ± std, 95 % t interval of the mean over seeds) and efficiency (costs, then
    the composite scores) as markdown, LaTeX (booktabs) and CSV, and their sections of the
    page."""
    demo = is_demo(df)
    scores = score_table(df)
    wide = wide_table(scores)
    eff = efficiency_table(df)
    eff_shown = efficiency_display(eff, timing=timing_note(df), hide_times=hide_times)
    tuned = budget_note(df)
    caption = "Test scores (mean ± std over seeds)"
    if tuned:
        # The budget belongs in the caption: a tuned row is only comparable at equal budgets.
        caption += (
            "; tuned rows: budget " + ", ".join(map(str, tuned_budgets(df))) + " on validation"
        )
        wide.footnotes.append(tuned)
        eff_shown.footnotes.append(tuned)
    parts = efficiency_parts(eff_shown)
    eff_md = "\n\n".join(f"## {t}\n\n{to_markdown(f, r)}" for t, f, r in parts)
    eff_md += "\n\n" + "\n".join(f"- {n}" for n in eff_shown.footnotes)
    eff_tex = to_latex_tables(
        [
            {"frame": f, "ranks": r, "caption": demo_caption(f"Efficiency: {t}", demo),
             "label": f"tab:efficiency-{slug(t)}" if i else "tab:efficiency"}
            for i, (t, f, r) in enumerate(parts)
        ],
        eff_shown.footnotes,
    )  # fmt: skip
    outputs = {
        "scores.md": demo_markdown(_markdown_with_notes(wide), demo),
        "scores.tex": to_latex(wide.frame, caption=demo_caption(caption, demo),
                               label="tab:scores", ranks=wide.ranks, footnotes=wide.footnotes),
        "scores.csv": to_csv(with_demo_column(scores, df)),
        "efficiency.md": demo_markdown(eff_md + "\n", demo),
        "efficiency.tex": eff_tex,
        "efficiency.csv": to_csv(with_demo_column(eff, df)),
    }  # fmt: skip
    sections = [
        {"heading": "Scores", "tables": [(caption, wide.frame, wide.ranks)],
         "notes": list(wide.footnotes)},
        {"heading": "Efficiency", "tables": parts, "notes": list(eff_shown.footnotes)},
    ]  # fmt: skip
    return sections, _write_all(out_dir, outputs)


def _write_stats(
    df: pd.DataFrame, out_dir: Path, baseline: str | None, plots: bool
) -> tuple[list[Section], list[Path]]:
    """stats.md and the page's statistics sections (`bench.report.statistics`), from the
    records and their saved test predictions; nothing without a baseline."""
    from bench.predictions import load_predictions
    from bench.report.statistics import statistics_report  # scipy's tests: only when reporting

    baseline = baseline or choose_baseline(df)
    if baseline is None:
        return [], []
    demo = is_demo(df)
    stats = statistics_report(df, baseline, out_dir, demo=demo, figures=plots,
                             load=lambda path, sha: load_predictions(Path(path), sha256=sha))  # fmt: skip
    text = demo_markdown(stats.markdown, demo)
    return stats.sections, [*stats.files, *_write_all(out_dir, {"stats.md": text})]


def _write_all(out_dir: Path, outputs: dict[str, str]) -> list[Path]:
    for name, text in outputs.items():
        write_atomic(out_dir / name, text)
    return [out_dir / name for name in outputs]
