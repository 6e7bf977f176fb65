"""Everything `bench report` writes into its folder: tables, statistics, figures, index.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from bench.demo import DEMO_NOTICE
from bench.records import write_atomic
from bench.report.conditions import timing_note
from bench.report.efficiency import COMPOSITE_FOOTNOTE, efficiency_display, efficiency_table
from bench.report.formats import to_csv, to_latex, to_markdown
from bench.report.html import render_html
from bench.report.missing import MISSING_NOTE, missing_in_grid
from bench.report.missing import lines as missing_lines
from bench.report.names import slug
from bench.report.profile import NOTE, profile_tables
from bench.report.stats import CORRECTION, average_ranks, choose_baseline, paired_vs_baseline
from bench.report.summary import blocks, summarize, write_summary
from bench.report.tables import Table, score_table, wide_table
from bench.report.tuning import budget_note, curve_frame, search_frame, trial_counts, tuned_budgets
from bench.tuning_select import TIE_RULE


def write_report(
    df: pd.DataFrame,
    out_dir: Path,
    *,
    plots: bool = True,
    baseline: str | None = None,
    profiles: pd.DataFrame | None = None,
    records: list[dict[str, Any]] | None = None,
    hide_times: bool = False,
) -> list[Path]:
    """Everything `bench report` renders: summary.md, the figures (PNG and PDF) and a
    self-contained index.html showing the tables and figures. Returns the files written.
    `baseline`: the method the paired tests compare against (default: `choose_baseline`).
    `records`: the records `df` came from, with search trials (the search section).
    `hide_times`: tables whose timings are not comparable show none
    (`bench.report.conditions`)."""
    # matplotlib takes a second to import: only a report with figures pays for it.
    from bench.report.plots import write_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [write_summary(df, out_dir, records, hide_times=hide_times)]
    figures = write_plots(df, out_dir / "figures") if plots and not df.empty else []
    written += figures
    pngs = [f for f in figures if f.suffix == ".png"]
    sections = []
    summary = summarize(df)
    for title, table, notes in blocks(summary, hide_times=hide_times) if not df.empty else []:
        key = slug(title)  # the plots name their files `<kind>-<slug of the block title>`
        sections.append(
            {
                "heading": title,
                "html": table.to_html(index=False, border=0, na_rep="—"),
                "figures": [f for f in pngs if f.stem.split("-", 1)[1] == key],
                "notes": notes,
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
        table_sections, table_files = _write_tables(df, out_dir, baseline, hide_times)
        sections = table_sections + sections
        written += table_files
    if profiles is not None and len(profiles):
        parts = ["# bench profile", "", NOTE, ""]
        for title, table, notes in profile_tables(profiles, hide_times=hide_times):
            parts += [f"## {title}", "", table.to_markdown(index=False, disable_numparse=True), ""]
            parts += [line for note in notes for line in (note, "")]
            sections.append({"heading": f"Profile: {title}",
                             "html": table.to_html(index=False, border=0), "figures": [],
                             "notes": [NOTE, *notes]})  # fmt: skip
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
    from bench.report.plots import write_budget_plots  # matplotlib: as in write_report

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


def _markdown_with_notes(table: Table) -> str:
    """A `Table` as a marked pipe table followed by its footnotes as a list."""
    notes = "\n".join(f"- {n}" for n in table.footnotes)
    return to_markdown(table.frame, table.ranks) + "\n\n" + notes


def _write_tables(
    df: pd.DataFrame, out_dir: Path, baseline: str | None, hide_times: bool
) -> tuple[list[dict], list[Path]]:
    """Scores (mean ± std, 95 % t interval of the mean over seeds) and efficiency (with the composite metrics) as
    markdown, LaTeX (booktabs) and CSV; statistics against a baseline; HTML sections of each."""
    files: list[Path] = []
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
    outputs = {
        "scores.md": _markdown_with_notes(wide),
        "scores.tex": to_latex(wide.frame, caption=caption,
                                      label="tab:scores", ranks=wide.ranks,
                                      footnotes=wide.footnotes),
        "scores.csv": to_csv(scores),
        "efficiency.md": _markdown_with_notes(eff_shown),
        "efficiency.tex": to_latex(eff_shown.frame, caption="Cost and composite scores",
                                          label="tab:efficiency", ranks=eff_shown.ranks,
                                          footnotes=eff_shown.footnotes),
        "efficiency.csv": to_csv(eff),
    }  # fmt: skip
    baseline = baseline or choose_baseline(df)
    notes = [COMPOSITE_FOOTNOTE]
    stats_html = ""
    if baseline is not None:
        paired = paired_vs_baseline(df, baseline)
        ranks = average_ranks(df)
        outputs["stats.md"] = (
            f"# Paired comparison against {baseline}\n\n"
            + paired.to_markdown(index=False) + f"\n\n{CORRECTION}\n\n# Average rank\n\n"
            + ranks.to_markdown(index=False) + "\n"
        )  # fmt: skip
        stats_html = (
            f"<h3>Wilcoxon signed-rank against {baseline}</h3>"
            + paired.to_html(index=False, border=0, na_rep="—")
            + "<h3>Average rank</h3>"
            + ranks.to_html(index=False, border=0, na_rep="—")
        )
        notes.append(CORRECTION)
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
