"""Paper protocols run the papers' training recipes: every setting a cell of `--protocol NAME`
gets equals the value its source states (the tables below cite them), and the recipe's pieces
(head init, dropout, decay rule, per-epoch cosine) do what their sources do."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from bench.cli import app
from bench.config import CellConfig, identity_fields
from bench.errors import UserError
from bench.grid import GridRequest, plan
from bench.model_init import init_head, set_dropout
from bench.protocols import apply_protocol, get_protocol, load_protocol
from bench.train import build_optimizer, build_scheduler, schedule_position

ALL = "*"
EPT_CONFIG = "zuwenqiang/EPT configs/_base_/schedules/imagenet_dense.py"
# (setting, methods it applies to, value, source). EPT: paper appendix A.1.1 and its configs.
EPT = [
    ("optimizer", ALL, "sgd", f"{EPT_CONFIG}: SGD, momentum 0.9"),
    ("lr", ALL, 6e-4, "EPT paper A.1.1: lr 6e-4 for every method"),
    ("weight_decay", ALL, 1e-4, f"{EPT_CONFIG}: weight_decay 1e-4"),
    ("decay", ALL, "all", f"{EPT_CONFIG}: no paramwise_cfg"),
    ("warmup_epochs", ALL, 0.0, f"{EPT_CONFIG}: CosineAnnealing without warmup"),
    ("grad_clip", ALL, 0.0, f"{EPT_CONFIG}: grad_clip=None"),
    ("lr_step", ALL, "epoch", "mmcv LrUpdaterHook: by_epoch=True by default"),
    ("head_init", ALL, "mmcls", "EPT configs: LinearClsHead / MultiLabelLinearClsHead, std 0.01"),
    ("backbone_dropout", ("full",), 0.1, "EPT configs/ablation_exp/vitb16_*.py: drop_rate 0.1"),
    ("backbone_dropout", ("linear", "ept", "lora", "vpt"), None, "EPT configs: ViT drop_rate 0"),
    ("precision", ALL, "fp32", "EPT configs: no fp16 optimizer hook"),
    ("epochs", ALL, 20, "EPT paper A.1.1: 20 epochs"),
    ("batch_size", ALL, 4, "EPT paper A.1.1: batch 4"),
    ("img_size", ALL, 224, "the 197-row prompts (spec 5, Resolution conflict)"),
    ("augment", ALL, "ept", "EPT configs/_base_/datasets: RandomResizedCrop + flip"),
    ("hparams.targets", ("lora",), "q,v", "EPT paper: LoRA on W_q and W_v"),
]
FPT_CONFIG = "YijinHuang/FPT configs"
FPT_METHODS = ("fpt-plus", "fpt-v1")
# FPT+: the repository's train.py and configs; the lr is each dataset yaml's (spec 6).
FPT = [
    ("optimizer", FPT_METHODS, "adamw", f"{FPT_CONFIG}/solver/adamw.yaml"),
    ("weight_decay", FPT_METHODS, 0.1, f"{FPT_CONFIG}/solver/adamw.yaml: weight_decay 0.1"),
    ("decay", ALL, "all", "FPT train.py: AdamW(model.parameters())"),
    ("warmup_epochs", ALL, 0.0, f"{FPT_CONFIG}/train_config.yaml: warmup_epochs 0"),
    ("grad_clip", ALL, 1.0, "FPT train.py: clip_grad_norm_(..., 1)"),
    ("lr_step", ALL, "iteration", "FPT train.py: adjust_learning_rate every step"),
    ("precision", ALL, "fp32", "FPT train.py: no autocast"),
    ("epochs", ALL, 20, f"{FPT_CONFIG}/train_config.yaml: epochs 20"),
    ("batch_size", ALL, 16, f"{FPT_CONFIG}/train_config.yaml: batch_size 16"),
    ("img_size", FPT_METHODS, 512, f"{FPT_CONFIG}/dataset/*.yaml: input_size 512"),
    ("augment", ALL, "fpt", "FPT data/transforms.py: the weak augmentations"),
    ("hparams.hf_style", FPT_METHODS, True, "FPT modules/frozen_vit.py: HF ViTModel"),
]
# FPT configs/dataset/*.yaml: the per-dataset learning rate of FPT+ and FPT (spec 6).
FPT_LR = {"messidor2": 2e-4, "ddr": 5e-4, "isic2016": 5e-3, "isic2018": 1e-4, "mini-ddsm": 1e-3,
          "cmmd": 5e-5, "covid": 1e-4, "chncxr": 5e-4}  # fmt: skip


def _cells(name: str, **changes) -> list[CellConfig]:
    req = GridRequest(methods=[], datasets=[], seeds=[0], backbone="x", **changes)
    return plan(apply_protocol(get_protocol(name), req), dry_run=True, progress=False).cells


def _value(cell: CellConfig, setting: str):
    if setting.startswith("hparams."):
        return cell.hparams[setting.split(".", 1)[1]]
    return getattr(cell, setting)


@pytest.mark.parametrize(("name", "table"), [("ept-table1", EPT), ("ept-table4", EPT),
                                             ("fptplus", FPT)])  # fmt: skip
def test_every_protocol_setting_is_the_value_its_source_states(name, table) -> None:
    cells = _cells(name)
    for setting, methods, expected, source in table:
        chosen = [c for c in cells if methods == ALL or c.method in methods]
        assert chosen, (setting, methods)
        got = {_value(c, setting) for c in chosen}
        assert got == {expected}, f"{name} {setting} for {methods}: {got}, source: {source}"


def test_fptplus_learning_rates_are_the_dataset_yamls_and_the_baselines_keep_the_suites() -> None:
    from methods import get_method

    for c in _cells("fptplus"):
        if c.method in FPT_METHODS:
            assert c.lr == FPT_LR[c.dataset]
        else:  # the repository has no baseline configs: the suite's defaults, stated
            assert (c.optimizer, c.lr) == (get_method(c.method).optimizer,
                                           get_method(c.method).default_lr(16))  # fmt: skip
    assert "no configs for them" in " ".join(get_protocol("fptplus").differences)


def test_precision_given_beside_a_protocol_opts_into_bf16() -> None:
    assert {c.precision for c in _cells("ept-table4", precision="fp32")} == {"fp32"}
    req = GridRequest(methods=[], datasets=[], seeds=[0], backbone="x", precision="bf16")
    assert apply_protocol(get_protocol("ept-table4"), req).precision == "bf16"


def test_every_pinned_value_must_cite_its_source(tmp_path) -> None:
    shipped = get_protocol("ept-table4").path.read_text()
    path = tmp_path / "ept-table4.toml"
    path.write_text(shipped.replace('grad_clip = "', 'unused = "'))
    with pytest.raises(UserError, match=r"\[sources\] must say where.*'grad_clip'"):
        load_protocol(path)
    path.write_text(shipped.replace("[training.full]", "[training.nope]"))
    with pytest.raises(UserError, match=r"\[training.nope\] must be a table for one of"):
        load_protocol(path)
    path.write_text(shipped.replace('lr_step = "epoch"', 'lr_steps = "epoch"'))
    with pytest.raises(UserError, match=r"\[training\] key lr_steps: valid keys are"):
        load_protocol(path)


def test_dry_run_shows_each_setting_beside_the_suite_default_and_the_differences(tmp_path):
    res = CliRunner().invoke(app, ["run", "--protocol", "ept-table4", "--dry-run", "--no-progress",
                                   "--data-root", str(tmp_path)], env={"COLUMNS": "400"})  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
            for line in res.output.splitlines() if line.count("│") >= 5}  # fmt: skip
    assert rows["warmup_epochs"] == ["0", "1"]
    assert rows["grad_clip"] == ["0", "1"]
    assert rows["optimizer"][0] == "sgd" and "adamw (full" in rows["optimizer"][1]
    assert rows["precision"][0] == "fp32" and rows["precision"][1].startswith("auto")
    assert rows["lora.targets"] == ["q,v", "qkv"]
    assert "where this protocol differs from the paper" in res.output
    res = CliRunner().invoke(app, ["run", "--protocol", "ept-table4", "--dry-run", "--json",
                                   "--data-root", str(tmp_path)])  # fmt: skip
    ids = [c["run_id"] for c in json.loads(res.stdout)["cells"]]
    doc = json.loads(res.stdout)["protocol"]
    narrow = CliRunner().invoke(app, ["run", "--protocol", "ept-table4", "--dry-run",
                                      "--no-progress", "--data-root", str(tmp_path)],
                                env={"COLUMNS": "100"})  # fmt: skip
    assert all(run_id in narrow.output for run_id in ids)  # whole, copyable, at 100 columns
    row = next(r for r in doc["settings"] if r["setting"] == "head_init")
    assert (row["protocol"], row["default"]) == ("mmcls", "timm") and "std 0.01" in row["source"]
    assert doc["differences"] == list(get_protocol("ept-table4").differences)
    # the protocol pins warm-up and clipping per method: the request-wide flags would be lost
    res = CliRunner().invoke(app, ["run", "--protocol", "ept-table4", "--warmup-epochs", "2"])
    assert res.exit_code == 2 and "drop --warmup-epochs" in res.stderr


def test_protocol_tuning_searches_the_methods_own_hyperparameters_at_the_papers_lr() -> None:
    from bench.tuning_plan import TuneRequest, resolve_space

    req = GridRequest(methods=[], datasets=[], seeds=[0], backbone="x")
    req = apply_protocol(get_protocol("ept-table4"), req).replace(tune=TuneRequest())
    space = resolve_space("lora", req, req.tune)  # lora declares no SGD space: its rank is kept
    assert set(space.axes) == {"rank"} and {"lr", "weight_decay"} <= set(space.pinned)


def test_late_fields_at_their_defaults_keep_old_run_ids() -> None:
    cell = CellConfig(method="linear", dataset="d", seed=0, backbone="b", pretrained=False,
                      weights=None, weights_sha256=None, epochs=1, batch_size=8, img_size=32,
                      device="cpu", precision="fp32", optimizer="adamw", lr=1e-3,
                      weight_decay=0.0, warmup_epochs=0.0, grad_clip=0.0)  # fmt: skip
    old = {k: v for k, v in cell.to_dict().items()
           if k not in ("backbone_dropout", "head_init", "lr_step", "decay")}  # fmt: skip
    assert identity_fields(cell.to_dict()) == identity_fields(old)
    for change in ({"backbone_dropout": 0.1}, {"head_init": "mmcls"}, {"lr_step": "epoch"},
                   {"decay": "all"}):  # fmt: skip
        assert dataclasses.replace(cell, **change).run_id != cell.run_id


def test_head_inits_follow_their_sources() -> None:
    torch.manual_seed(0)
    model = nn.Module()
    model.head = nn.Linear(768, 500)
    model.get_classifier = lambda: model.head
    init_head(model, "mmcls")  # Normal(std=0.01), bias 0
    assert model.head.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert torch.all(model.head.bias == 0)
    init_head(model, "kmnp")  # kaiming-normal fan_out (gain sqrt 2), bias -log((1-0.01)/0.01)
    assert model.head.weight.std().item() == pytest.approx(math.sqrt(2 / 500), rel=0.02)
    assert torch.allclose(model.head.bias, torch.full((500,), -math.log(99)))
    with pytest.raises(UserError, match="head_init 'x': expected one of timm, mmcls, kmnp"):
        init_head(model, "x")


def test_dropout_reaches_tokens_projections_and_mlp_but_not_attention_probabilities() -> None:
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2,
                            num_classes=3)  # fmt: skip
    set_dropout(vit, 0.1)
    ps = {n: m.p for n, m in vit.named_modules() if isinstance(m, nn.Dropout)}
    assert ps["pos_drop"] == 0.1 and ps["blocks.0.attn.proj_drop"] == 0.1
    assert ps["blocks.1.mlp.drop1"] == 0.1 and ps["blocks.1.mlp.drop2"] == 0.1
    assert ps["blocks.0.attn.attn_drop"] == 0.0


def test_decay_all_reaches_biases_and_norms_as_torch_does() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    groups = build_optimizer(model, "sgd", 0.1, 1e-4, "all").param_groups
    assert [(len(g["params"]), g["weight_decay"]) for g in groups] == [(4, 1e-4)]
    groups = build_optimizer(model, "sgd", 0.1, 1e-4).param_groups  # nanoGPT's rule
    assert [(len(g["params"]), g["weight_decay"]) for g in groups] == [(1, 1e-4), (3, 0.0)]


def test_per_epoch_cosine_holds_the_rate_through_each_epoch_as_mmcv_does() -> None:
    epochs, per_epoch, base = 4, 3, 0.1
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
    sched = build_scheduler(opt, total_steps=epochs * per_epoch, warmup_steps=0)
    seen = []
    for step in range(epochs * per_epoch):  # the rate each step trains with
        sched.step_update(num_updates=schedule_position(step, per_epoch, "epoch"))
        seen.append(opt.param_groups[0]["lr"])
    # mmcv CosineAnnealing (by_epoch): lr(e) = base * (1 + cos(pi * e / epochs)) / 2
    expected = [base * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]
    assert seen == pytest.approx([lr for lr in expected for _ in range(per_epoch)])
    assert schedule_position(7, per_epoch, "iteration") == 7


def _ept_record(split_seed: int, value: float, **config) -> dict:
    ept = get_protocol("ept-table4")
    cfg = {"dataset": "isic2018", "method": "ept", "seed": 0, "shots": 1,
           "split_seed": split_seed, "backbone": ept.backbone, "pretrained": True,
           "img_size": 224, "epochs": 20, "batch_size": 4, "augment": "ept", "precision": "fp32",
           **ept.training_for("ept"), **config}  # fmt: skip
    return {"run_id": f"r{split_seed}", "status": "ok", "config": cfg,
            "metrics": {"primary_metric": "accuracy", "primary": value,
                        "test": {"accuracy": value}}}  # fmt: skip


def test_paper_table_counts_only_the_papers_recipe_and_its_caption_says_what_differs() -> None:
    from bench.report import records_frame
    from bench.report.paper import paper_table, render_paper_latex, render_paper_table

    records = [
        _ept_record(0, 0.30),
        _ept_record(1, 0.50, precision="bf16"),  # counted, and said
        # the suite's own recipe (an older run of the protocol): not the paper's
        _ept_record(2, 0.90, optimizer="adamw", warmup_epochs=1.0, grad_clip=1.0),
    ]
    long = records_frame(records)
    table = paper_table(get_protocol("ept-table4"), long).set_index("method")
    assert table.loc["EPT", "ISIC2018 1 ours"] == pytest.approx(40.0)
    text = render_paper_table("ept-table4", long)
    assert "1 record(s) ran in bf16 where the paper ran fp32" in text
    assert "1 record(s) of this protocol's datasets and methods were run with other" in text
    caption = render_paper_latex("ept-table4", long).split(r"\caption{")[1]
    assert "Settings that differ from the paper: input 224 px" in caption.split("}\n")[0]
    # a record from before the recipe fields existed trained with the suite's defaults
    old = _ept_record(3, 0.9)
    for key in ("head_init", "lr_step", "decay", "backbone_dropout"):
        old["config"].pop(key, None)
    alone = paper_table(get_protocol("ept-table4"), records_frame([old])).set_index("method")
    assert math.isnan(alone.loc["EPT", "ISIC2018 1 ours"])
    old["config"].update(head_init="mmcls", lr_step="epoch", decay="all")  # the paper's, again
    again = paper_table(get_protocol("ept-table4"), records_frame([old])).set_index("method")
    assert again.loc["EPT", "ISIC2018 1 ours"] == pytest.approx(90.0)


def test_a_protocol_recipe_trains_end_to_end(tiny_data_root, tmp_path) -> None:
    from bench.records import load_records

    path = tmp_path / "mine.toml"
    path.write_text("""
name = "mine"
title = "a recipe like EPT's on the tiny data"
paper_csv = "ept_table4_isic2018.csv"
backbone = "test_vit"
img_size = 32
epochs = 2
batch_size = 16
augment = "none"
datasets = ["pneumoniamnist"]
methods = ["full", "lora"]
seeds = [0]
[training]
optimizer = "sgd"
lr = 0.01
weight_decay = 1e-4
decay = "all"
warmup_epochs = 0
grad_clip = 0
lr_step = "epoch"
head_init = "mmcls"
[training.full]
backbone_dropout = 0.1
[hparams.lora]
targets = "q,v"
[sources]
optimizer = "a"
lr = "a"
weight_decay = "a"
decay = "a"
warmup_epochs = "a"
grad_clip = "a"
lr_step = "a"
head_init = "a"
"full.backbone_dropout" = "a"
"lora.targets" = "a"
""")
    results = tmp_path / "results"
    res = CliRunner().invoke(app, ["run", "--protocol", str(path), "--data-root",
                                   str(tiny_data_root), "--no-pretrained", "--results",
                                   str(results), "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    recs = {r["config"]["method"]: r for r in load_records(results).records}
    assert {r["status"] for r in recs.values()} == {"ok"}
    for r in recs.values():
        cfg = r["config"]
        assert (cfg["optimizer"], cfg["decay"], cfg["lr_step"], cfg["head_init"],
                cfg["precision"]) == ("sgd", "all", "epoch", "mmcls", "fp32")  # fmt: skip
    assert recs["full"]["config"]["backbone_dropout"] == 0.1
    assert recs["lora"]["config"]["backbone_dropout"] is None
    assert recs["lora"]["config"]["hparams"]["targets"] == "q,v"
    # test_vit: 6 blocks of width 64, rank 8: q and v each 8 x (64 + 64), plus a 2-class head
    assert recs["lora"]["params"]["trainable_params"] == 6 * 2 * 8 * (64 + 64) + 64 * 2 + 2


def test_a_methods_own_dropout_stays_its_own_beside_the_backbones() -> None:
    from bench.grid import method_settings

    req = GridRequest(methods=["lora", "full"], datasets=["demo"], seeds=[0], backbone="x",
                      sets={"lora": {"dropout": "0.1"}, "full": {"backbone_dropout": "0.2"}})  # fmt: skip
    train, hparams = method_settings("lora", req)
    assert hparams["dropout"] == 0.1 and train["backbone_dropout"] is None
    assert method_settings("full", req)[0]["backbone_dropout"] == 0.2
