"""Paper protocols (`bench run --protocol`) and paper tables (`bench report --paper`)."""

from __future__ import annotations

import math
import re

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.demo import DEMO_NOTICE
from bench.grid import GridRequest, plan
from bench.protocols import get_protocol, list_protocols
from bench.report import records_frame
from bench.report.paper import (
    paper_table,
    published,
    render_paper_latex,
    render_paper_table,
    write_paper_table,
)

runner = CliRunner()


def test_shipped_protocols_name_real_methods_datasets_and_published_rows() -> None:
    from bench.catalog import get_card
    from methods import get_method

    assert list_protocols() == ["ept-table1", "ept-table4", "fptplus"]
    for name in list_protocols():
        p = get_protocol(name)
        for method in (*p.methods, *p.paper_methods.values()):
            assert get_method(method).name == method
        for dataset in p.datasets:
            get_card(dataset)
        pub = published(p)
        # every published method row maps to a method the protocol runs
        assert set(pub["method"]) >= set(p.paper_methods)
        assert set(p.paper_methods.values()) <= set(p.methods)


def test_ept_table1_grid_and_budget() -> None:
    req = GridRequest(methods=[], datasets=[], seeds=[0], backbone="x")
    from bench.protocols import apply_protocol

    req = apply_protocol(get_protocol("ept-table1"), req)
    cells = plan(req, dry_run=True, progress=False).cells
    assert len(cells) == 10 * 3 * 3 * 5  # methods x datasets x shots x split seeds
    assert {c.shots for c in cells} == {1, 5, 10} and {c.split_seed for c in cells} == set(range(5))
    assert {(c.epochs, c.batch_size, c.img_size, c.augment) for c in cells} == {(20, 4, 224, "ept")}
    assert {c.backbone for c in cells} == {"vit_base_patch16_224.orig_in21k"}


def test_fptplus_per_dataset_learning_rates_reach_fpt_only() -> None:
    from bench.catalog import get_card
    from bench.protocols import apply_protocol
    from methods import get_method

    req = GridRequest(methods=[], datasets=[], seeds=[0], backbone="x")
    req = apply_protocol(get_protocol("fptplus"), req)
    cells = plan(req, dry_run=True, progress=False).cells
    assert len(cells) == 6 * 8 * 3
    for c in cells:
        if c.method in ("fpt-plus", "fpt-v1"):
            assert c.lr == get_card(c.dataset).reference_lr
        else:
            # each method's own default at the protocol's batch (VPT's scales by batch/256)
            assert c.lr == get_method(c.method).default_lr(c.batch_size)
    assert {c.lr for c in cells if c.method == "fpt-plus"} == {2e-4, 5e-4, 5e-3, 1e-4, 1e-3, 5e-5}


def test_protocol_refuses_grid_options_and_dry_run_lists_missing_data(tmp_path) -> None:
    res = runner.invoke(app, ["run", "--protocol", "fptplus", "--methods", "linear"])
    assert res.exit_code == 2 and "drop --methods" in res.stderr
    res = runner.invoke(app, ["run", "--protocol", "nope"])
    assert res.exit_code == 2 and "available: ept-table1" in res.stderr
    res = runner.invoke(app, ["run", "--protocol", "ept-table4", "--dry-run", "--no-progress",
                              "--data-root", str(tmp_path)], env={"COLUMNS": "300"})  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "150 cell(s)" in res.output and "missing data: isic2018" in res.output
    # few-shot sizes are known without data: 7 classes x (1 + 5 + 10) x 5 samplings x 10
    # methods x 20 epochs
    assert f"{7 * 16 * 5 * 10 * 20:,} training images passed" in res.output


def _record(method: str, dataset: str, shots: int, split_seed: int, value: float, status="ok",
            **settings):  # fmt: skip
    # the EPT protocols' settings (both tables): only records run under them count
    ept = get_protocol("ept-table4")  # both EPT tables pin the same recipe
    cfg = {"dataset": dataset, "method": method, "seed": 0, "shots": shots,
           "split_seed": split_seed, "backbone": "vit_base_patch16_224.orig_in21k",
           "pretrained": True, "img_size": 224, "epochs": 20, "batch_size": 4, "augment": "ept",
           **ept.training_for(method), "hparams": ept.hparams.get(method, {}), "precision": "fp32",
           **settings}  # fmt: skip
    return {"run_id": f"{dataset}-{method}-{shots}-{split_seed}", "status": status,
            "config": cfg, "metrics": {"primary_metric": "map", "primary": value, "test": {}}}  # fmt: skip


def test_paper_table_sets_reproduced_beside_published() -> None:
    p = get_protocol("ept-table1")
    records = [
        _record("ept", "medfmc-chestdr", 1, 0, 0.10),
        _record("ept", "medfmc-chestdr", 1, 1, 0.14),
        _record("ept", "medfmc-chestdr", 5, 0, 0.50, status="failed"),
        _record("linear", "medfmc-chestdr", 1, 0, 0.30),
    ]
    table = paper_table(p, records_frame(records)).set_index("method")
    pub = published(p)
    ept_chest_1 = float(
        pub.query("method == 'EPT' and dataset == 'ChestDR' and shots == '1'")["value"].iloc[0]
    )
    assert table.loc["EPT", "ChestDR 1 paper"] == ept_chest_1
    assert table.loc["EPT", "ChestDR 1 ours"] == pytest.approx(12.0)  # mean of 10 and 14
    assert table.loc["EPT", "ChestDR 1 diff"] == pytest.approx(12.0 - ept_chest_1)
    assert math.isnan(table.loc["EPT", "ChestDR 5 ours"])  # only a failed run: not a result
    assert math.isnan(table.loc["Full", "ChestDR 1 ours"])
    # the 9-task average needs every cell; one cell is not an average
    avg = [c for c in table.columns if c.startswith("MedFMC-average") and c.endswith("ours")]
    assert avg and math.isnan(table.loc["EPT", avg[0]])
    # every published number appears, in the paper's method order
    assert list(table.index) == list(dict.fromkeys(pub["method"]))
    text = render_paper_table("ept-table1", records_frame(records))
    assert "not run" in text and "12.00" in text and "EPT.pdf" in text
    assert DEMO_NOTICE not in text
    # a record it counts that ran on the demo backbone or data: the table says DEMO
    demo = [{**records[0], "demo": True}, *records[1:]]
    assert DEMO_NOTICE in render_paper_table("ept-table1", records_frame(demo))
    latex = render_paper_latex("ept-table1", records_frame(demo))
    captions = re.findall(r"\\caption\{(.*)\}", latex)
    assert len(captions) == 4 and all(c.startswith("DEMO:") for c in captions)


def test_a_wide_paper_table_is_one_table_per_shot_setting(tmp_path) -> None:
    records = [
        _record("ept", "medfmc-chestdr", 1, 0, 0.10),
        _record("ept", "medfmc-chestdr", 1, 1, 0.14),
    ]
    long = records_frame(records)
    text = render_paper_table("ept-table1", long)
    titles = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert titles[:4] == ["1-shot", "5-shot", "10-shot", "1/5/10 shots"]
    tables = [line for line in text.splitlines() if line.startswith("| method")]
    # three datasets, each published beside reproduced and their difference: 10 columns
    assert [t.count("|") - 1 for t in tables] == [10, 10, 10, 4]
    header = [c.strip() for c in tables[0].strip("|").split("|")]
    assert header[:4] == ["method", "ChestDR paper", "ChestDR ours", "ChestDR diff"]
    one_shot = text.split("## 5-shot")[0]
    assert "| EPT " in one_shot and "12.00" in one_shot  # the 1-shot runs, in the 1-shot table
    files, section = write_paper_table("ept-table1", long, tmp_path)
    tex = files[1].read_text()
    assert tex.count(r"\begin{tabular}{lrrrrrrrrr}") == 3 and tex.count(r"\begin{table}") == 4
    assert r"\caption{EPT Table 1: ViT-B/16 (ImageNet-21k) on MedFMC, 1/5/10-shot: 5-shot}" in tex
    # the first caption says what differs from the paper
    first = tex.split(r"\caption{")[1].split("}\n")[0]
    assert first.startswith("EPT Table 1: ViT-B/16 (ImageNet-21k) on MedFMC, 1/5/10-shot: 1-shot.")
    assert "Settings that differ from the paper: input 224 px" in first
    assert tex.count("Cells not run yet") == 1  # the notes once, under the last table
    assert [t[0] for t in section["tables"]] == titles[:4]
    assert section["tables"][0][1].shape == (10, 10)


def test_average_column_when_every_cell_is_run() -> None:
    p = get_protocol("ept-table4")
    records = [_record("ept", "isic2018", k, s, 0.2 + 0.01 * k) for k in (1, 5, 10) for s in (0, 1)]
    table = paper_table(p, records_frame(records)).set_index("method")
    avg = [c for c in table.columns if c.endswith(" ours") and not c.split()[1].isdigit()]
    assert len(avg) == 1
    assert table.loc["EPT", avg[0]] == pytest.approx(100 * (0.21 + 0.25 + 0.30) / 3)


def test_report_paper_cli(tmp_path) -> None:
    import json

    results = tmp_path / "results"
    results.mkdir()
    rec = _record("ept", "isic2018", 1, 0, 0.3)
    (results / f"{rec['run_id']}.json").write_text(json.dumps({**rec, "schema": 1}))
    res = runner.invoke(app, ["report", "--results", str(results), "--out", str(tmp_path / "out"),
                              "--paper", "ept-table4"])  # fmt: skip
    assert res.exit_code == 0, res.output
    text = (tmp_path / "out" / "paper-ept-table4.md").read_text()
    assert "| EPT" in text and "30.00" in text
    assert (tmp_path / "out" / "paper-ept-table4.tex").read_text().startswith(r"\begin{table}")


def test_paper_table_ignores_records_run_under_other_settings_and_says_so() -> None:
    records = [
        _record("ept", "isic2018", 1, 0, 0.30),
        _record("ept", "isic2018", 1, 1, 0.90, epochs=2),  # a quick run, not the protocol's
        _record("ept", "isic2018", 1, 2, 0.90, backbone="demo-vit"),
    ]
    table = paper_table(get_protocol("ept-table4"), records_frame(records)).set_index("method")
    assert table.loc["EPT", "ISIC2018 1 ours"] == pytest.approx(30.0)
    text = render_paper_table("ept-table4", records_frame(records))
    assert (
        "2 record(s) of this protocol's datasets and methods were run with other settings" in text
    )


def test_paper_table_lists_the_protocols_cells_not_run() -> None:
    # ept-table4: 1 dataset x 3 shots x 5 split seeds x 10 methods x 1 seed = 150 cells
    records = [_record("ept", "isic2018", 1, s, 0.3) for s in range(5)]
    records.append(_record("ept", "isic2018", 5, 0, 0.3, status="failed"))  # a record: not missing
    text = render_paper_table("ept-table4", records_frame(records))
    assert "## Cells not run yet: 144 of 150" in text
    assert "isic2018 1-shot / ept" not in text  # all five splits ran
    assert "isic2018 5-shot / ept: 4 of 5 runs have no record (split 1 seed 0, split 2 seed 0, " \
           "split 3 seed 0, split 4 seed 0)" in text  # fmt: skip
    assert "isic2018 10-shot / lora: 5 of 5 runs have no record" in text


def test_paper_table_in_latex_groups_paper_ours_diff_under_each_column() -> None:
    from bench.report.paper import render_paper_latex

    tex = render_paper_latex("ept-table4", records_frame([_record("ept", "isic2018", 1, 0, 0.3)]))
    pub = published(get_protocol("ept-table4"))
    n_cols = 1 + 3 * len(pub.drop_duplicates(["dataset", "shots"]))
    spec = tex.split(r"\begin{tabular}{", 1)[1].split("}", 1)[0]
    assert len(spec) == n_cols
    header = tex.split(r"\toprule", 1)[1].split(r"\midrule", 1)[0]
    assert r"\multicolumn{3}{c}{ISIC2018 1}" in header and r"\cmidrule(lr){2-4}" in header
    # every body row has exactly n_cols cells; "not run" cells are text, not numbers
    body = tex.split(r"\midrule", 1)[1].split(r"\bottomrule", 1)[0].strip().splitlines()
    assert len(body) == len(pub["method"].unique())
    assert all(row.count(" & ") == n_cols - 1 and row.endswith(r"\\") for row in body)
    assert "30.00" in tex and "not run" in tex and "Cells not run yet: 149 of 150" in tex
