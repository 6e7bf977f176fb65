"""The report as a person reads it: marked HTML tables that fit a 1400 px window, numbers set
flush right, DEMO on every file, each note once, a filtered report in a folder of its own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from report_page_data import realistic_records
from typer.testing import CliRunner

from bench.cli import app
from bench.cli.report import filter_folder
from bench.demo import DEMO_NOTICE
from bench.report import html as html_report
from bench.report import records_frame, write_report
from bench.report.fit import fit_columns
from bench.report.formats import is_label, to_html, to_latex, to_markdown
from bench.report.paper import write_paper_table

NO_BROWSER = "chromium not installed (apt-get install chromium)"
SCORE = "82.00 ± 2.00 [77.03, 86.97]"


def marked() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = pd.DataFrame(
        {
            "block": ["derm 4-shot", "derm 4-shot", "chest"],
            "method": ["lora <r8>", "full", "vpt"],
            "acc": ["81.00", "83.50", "not run"],
            "note": ["10 pairs", "", "too few pairs"],
        }
    )
    ranks = pd.DataFrame({"block": [0] * 3, "method": [0] * 3, "acc": [2, 1, 0], "note": [0] * 3})
    return frame, ranks


def test_to_html_marks_escapes_aligns_and_groups() -> None:
    frame, ranks = marked()
    page = to_html(frame, ranks)
    assert '<td class="num"><strong>83.50</strong></td>' in page
    assert '<td class="num"><u>81.00</u></td>' in page
    assert '<td class="num">not run</td>' in page  # unmarked
    assert '<td class="label">lora &lt;r8&gt;</td>' in page and "<r8>" not in page
    assert '<td class="label">10 pairs</td>' in page  # a named label column stays left
    # the block is a heading row over its runs of rows, not a column
    assert re.findall(r'<tr class="group"><th colspan="3"[^>]*>([^<]*)</th>', page) == [
        "derm 4-shot",
        "chest",
    ]
    assert page.count("<tr>") == 1 + 3  # the header row and three rows
    assert "<th" in page and ">block<" not in page
    assert ">block<" in to_html(frame, ranks, group=None)


def test_label_columns_flush_left_numbers_flush_right_everywhere() -> None:
    frame, ranks = marked()
    assert [is_label(frame, j) for j in range(4)] == [True, True, False, True]
    rule = to_markdown(frame, ranks).splitlines()[1].strip("|").split("|")
    assert [r.startswith(":") for r in rule] == [True, True, False, True]
    assert [r.endswith(":") for r in rule] == [False, False, True, False]
    tex = to_latex(frame, caption="c", label="t", ranks=ranks)
    assert r"\begin{tabular}{llrl}" in tex
    # a column with no number yet is still a number column; words make a label column
    later = pd.DataFrame({"method": ["a", "b"], "ours": ["not run", "—"], "mode": ["random", "grid"],
                          "runs": ["failed/oom", "3 ok"]})  # fmt: skip
    assert [is_label(later, j) for j in range(4)] == [True, False, True, False]


def test_fit_columns_splits_a_wide_table_and_keeps_labels() -> None:
    frame = pd.DataFrame({"method": ["a", "b"], **{f"block {k}": [SCORE] * 2 for k in range(12)}})
    ranks = pd.DataFrame(0, index=frame.index, columns=frame.columns)
    ranks.iloc[1, 5] = 1
    parts = fit_columns(frame, ranks)
    assert len(parts) > 1
    assert all(p.columns[0] == "method" and list(r.columns) == list(p.columns) for p, r in parts)
    seen = [c for p, _ in parts for c in p.columns[1:]]
    assert seen == list(frame.columns[1:])  # every column once, in order
    # ~27 characters a cell: about 220 px each, at most five beside the method in 1240 px
    assert all(len(p.columns) <= 6 for p, _ in parts)
    assert sum(int(r.to_numpy().sum()) for _, r in parts) == 1  # the mark travels with its cell
    small = frame.iloc[:, :3]
    assert fit_columns(small)[0][0] is small


def test_render_html_sections_of_tables_figures_and_notes(tmp_path: Path) -> None:
    frame, ranks = marked()
    png = tmp_path / "fig-a.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    sections = [
        {"heading": "One", "tables": [("Scores here", frame, ranks)],
         "figures": [(png, "What the figure shows")], "notes": ["Shared note.", "Own note."]},
        {"heading": "Two", "tables": [("", frame)], "figures": [png],
         "notes": ["Shared note."]},
        {"heading": "Old", "html": "<table><tr><td>kept</td></tr></table>"},
    ]  # fmt: skip
    page = html_report.render_html("t", sections, caption=lambda p: f"caption of {p.stem}")
    assert '<h3 class="caption">Scores here</h3>' in page
    assert "<strong>83.50</strong>" in page and "<td>kept</td>" in page
    assert "What the figure shows" in page and "caption of fig-a" in page
    notes = re.findall(r'<p class="note">([^<]*)</p>', page)
    assert notes == ["Shared note.", "Own note."]
    assert '<p class="note-ref">As noted under <a href="#one">One</a>' in page


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    records = realistic_records()
    out = tmp_path_factory.mktemp("report")
    written = write_report(records_frame(records), out, plots=False, records=records)
    return out, written


def test_every_file_of_a_demo_report_says_demo(demo_report: tuple[Path, list[Path]]) -> None:
    out, written = demo_report
    names = {p.name for p in written}
    assert {"summary.md", "scores.md", "scores.tex", "scores.csv", "efficiency.md",
            "efficiency.tex", "efficiency.csv", "stats.md", "index.html"} <= names  # fmt: skip
    for path in written:
        text = path.read_text()
        if path.suffix == ".csv":  # a comment line would break CSV readers: a column says it
            assert pd.read_csv(path)["demo"].all(), path.name
        else:
            assert DEMO_NOTICE in text, path.name
    for tex in out.glob("*.tex"):  # in every caption, so the typeset table says it too
        captions = re.findall(r"\\caption\{(.*)\}", tex.read_text())
        assert captions and all(c.startswith("DEMO: synthetic") for c in captions)


def test_a_report_of_real_records_says_nothing_of_demo(tmp_path: Path) -> None:
    records = [{**r, "demo": False} for r in realistic_records()]
    written = write_report(records_frame(records), tmp_path, plots=False)
    assert not any(DEMO_NOTICE in p.read_text() for p in written)
    assert not pd.read_csv(tmp_path / "scores.csv")["demo"].any()


def test_page_shows_each_note_once(demo_report: tuple[Path, list[Path]]) -> None:
    page = (demo_report[0] / "index.html").read_text()
    notes = re.findall(r'<p class="note">(.*?)</p>', page, flags=re.S)
    assert len(notes) == len(set(notes)) > 5
    # the composite definitions sit under the efficiency table only, the Holm sentence once
    assert page.count("PPT (V-PETL Bench") == 1 and page.count("Holm-Bonferroni") == 1
    assert "Best in bold, second best underlined" in page and "<strong>" in page


def test_efficiency_is_two_tables_costs_then_scores(demo_report: tuple[Path, list[Path]]) -> None:
    out, _ = demo_report
    md = (out / "efficiency.md").read_text()
    assert "## Costs" in md and "## Score and composite scores" in md
    headers = [line for line in md.splitlines() if line.startswith("| block")]
    assert len(headers) == 2
    assert "eval J/img" in headers[0] and "PPT" not in headers[0]
    assert "PPT" in headers[1] and "params" not in headers[1]
    tex = (out / "efficiency.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 2 and tex.count("PPT (V-PETL Bench") == 1


def test_filtered_report_gets_its_own_folder(tmp_path: Path, monkeypatch) -> None:
    assert filter_folder("derm", None, None, ["hparams.rank!=4"]) == (
        "datasets-derm-where-hparams-rank-not-4"
    )
    assert filter_folder(None, None, None, ["hparams.rank=4"]) != filter_folder(
        None, None, None, ["hparams.rank!=4"]
    )
    results = tmp_path / "results"
    results.mkdir()
    for r in realistic_records():
        (results / f"{r['run_id']}.json").write_text(json.dumps(r))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    base = ["report", "--results", str(results), "--no-plots"]
    res = runner.invoke(app, [*base, "--methods", "lora,full"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    folder = Path("reports") / "methods-lora-full"
    assert (folder / "index.html").is_file() and not Path("reports/index.html").exists()
    assert f"written to its own folder {folder}/" in res.output
    assert "vpt_deep" not in (folder / "scores.csv").read_text()
    res = runner.invoke(app, [*base, "--methods", "lora", "--out", "mine"])
    assert res.exit_code == 0 and (tmp_path / "mine" / "index.html").is_file()
    res = runner.invoke(app, base)
    assert res.exit_code == 0 and Path("reports/index.html").is_file()


def wide_extra_section() -> dict:
    """A statistics-like section from another module: many columns, long names."""
    frame = pd.DataFrame(
        {"method": ["ssf_with_a_rather_long_registered_name", "lora"],
         **{f"dataset_{k} 16-shot · vit_small_patch16_224": [SCORE, "not run"] for k in range(9)}}
    )  # fmt: skip
    return {"heading": "Wide", "tables": [("Nine blocks", frame)], "notes": ["Wide table."]}


@pytest.mark.skipif(html_report.find_browser() is None, reason=NO_BROWSER)
def test_every_table_fits_a_1400px_window(tmp_path: Path) -> None:
    records = realistic_records()
    paper = [{**r, "config": {**r["config"], "dataset": "medfmc-chestdr", "method": "ept"}}
             for r in records[:3]]  # fmt: skip
    _, section = write_paper_table("ept-table1", records_frame(paper), tmp_path)
    write_report(records_frame(records), tmp_path, plots=False, records=records,
                 sections=[section, wide_extra_section()])  # fmt: skip
    shot = tmp_path / "page.png"
    result = html_report.check_in_browser(tmp_path / "index.html", screenshot_to=shot)
    assert result is not None
    assert result["window_width"] == html_report.WINDOW_WIDTH == 1400
    assert len(result["tables_fit"]) == result["tables"] > 12
    assert result["overflowing"] == [], result["overflowing"]
    assert not result["page_overflows"] and result["document_width"] == 1400
    sections = {t["section"] for t in result["tables_fit"]}
    assert {"scores", "efficiency", "methods-over-blocks-friedman-test-and-critical-difference",
            "hyperparameter-search", "wide"} <= sections  # fmt: skip
    wide = [t for t in result["tables_fit"] if t["section"] == "wide"]
    assert len(wide) > 1  # split into parts that fit
    # the screenshot is of the whole page at 1400 px: far taller than one window
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size[0] == 1400 and im.size[1] > 3000


@pytest.mark.skipif(html_report.find_browser() is None, reason=NO_BROWSER)
def test_browser_check_reports_a_table_that_overflows(tmp_path: Path) -> None:
    wide = "<table><tr>" + "<td>x</td>" * 5 + f'<td style="min-width:3000px">{SCORE}</td></tr>'
    page = html_report.render_html("t", [{"heading": "h", "html": wide + "</table>"}])
    index = tmp_path / "index.html"
    index.write_text(page)
    result = html_report.check_in_browser(index)
    assert [t["section"] for t in result["overflowing"]] == ["h"]
    assert result["overflowing"][0]["width"] > 3000 > result["overflowing"][0]["room"]
    assert not result["page_overflows"]  # the wrapper scrolls it, the page does not
