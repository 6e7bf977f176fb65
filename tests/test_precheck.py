"""Bad grid options fail before torch is imported (bench.precheck), with the message the full
check (`GridRequest.checked()`) gives, and the early check never refuses what the full one takes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bench import method_manifest, precheck
from bench.errors import UserError
from bench.option_values import AUGMENT_NAMES
from bench.precheck import EarlyRequest
from bench.tuning_request import TuneRequest

ROOT = Path(__file__).resolve().parents[1]
EARLY_METHODS = precheck.early_methods  # before the autouse fixture below replaces it

# (argv, a fragment of the one `error:` line); every one fails before torch is imported
LOCAL_SLURM = ["run", "--launcher", "slurm", "--slurm-cluster", "local"]
BAD_INPUT: list[tuple[list[str], str]] = [
    (["run", "--methods", "lora", "--set", "lora.rank=abc"], "lora.rank='abc': expected a value"),
    (["run", "--methods", "lorax"], "unknown method 'lorax'; available: full,"),
    (["run", "--datasets", "nope"], "unknown dataset 'nope'; available:"),
    (["run", "--methods", "lora", "--set", "lora.nope=1"], "'lora' has no hyperparameter 'nope'"),
    (["run", "--set", "bitfit.lr=0.1"], "method 'bitfit' is not in --methods"),
    (["run", "--augment", "nope"], "unknown augmentation 'nope'; choose one of: rrc-flip"),
    (["run", "--shots", "0"], "--shots: give one or more integers >= 1"),
    (["run", "--protocol", "nope"], "unknown protocol 'nope'; available:"),
    (["run", "--protocol", "no/such.toml"], "--protocol no/such.toml: no such protocol file"),
    (["run", "--protocol", "fptplus", "--set", "bitfit.lr=0.1"], "'bitfit' is not in --methods"),
    (["run", "--protocol", "fptplus", "--set", "lora.rank=x"], "lora.rank='x': expected"),
    (["run", "--protocol", "fptplus", "--seeds", "1"], "drop --seeds (or run without"),
    (["run", "--seeds", "3-1"], "range '3-1' runs backwards"),
    (["run", "--methods", "lora", "--set", "lora.head_init=x"], "expected one of timm, mmcls"),
    (["run", "--methods", "vpt", "--set", "vpt.decay=x"], "vpt.decay='x': expected one of"),
    (["run", "--set", "full.optimizer=adam"], "full.optimizer='adam': expected one of adamw, sgd"),
    (["run", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["run", "--grad-clip", "nan"], "--warmup-epochs and --grad-clip must be >= 0"),
    (["run", "--launcher", "local", "--gpus", "0"], "--gpus needs --launcher subprocess"),
    (["run", "--budget", "0", "--tune"], "--budget must be >= 1, got 0"),
    (["tune", "--methods", "lora", "--set", "lora.rank=abc"], "lora.rank='abc': expected"),
    (["status", "--methods", "lorax"], "unknown method 'lorax'"),
    (["status", "--methods", "lora", "--set", "lora.nope=1"], "has no hyperparameter 'nope'"),
    (["run", "--backbone", "vit_bse_patch16_224"], "unknown backbone 'vit_bse_patch16_224'"),
    (["status", "--backbone", "vit_bse"], "unknown backbone 'vit_bse': not a timm model name"),
    (["run", "--weights", "no/such.pt"], "weights file no/such.pt does not exist"),
    (["run", "--weights", "w.pt", "--no-pretrained"], "--weights and --no-pretrained contradict"),
    (["run", "--datasets", "chestmnist", "--data-root", "no/such"], "chestmnist.npz not found"),
    (["tune", "--methods", "lora", "--space", "lora.rank=a"], "--space lora.rank='a': expected"),
    (["tune", "--methods", "lora", "--space", "lora.nope=1"], "--space lora.nope: no such"),
    (["tune", "--methods", "lora", "--space", "vpt.lr=1"], "not a method of this grid (lora)"),
    (["tune", "--methods", "lora", "--space", "lora.lr=-1"], "every learning rate in the space"),
    (["tune", "--methods", "vpt", "--set", "vpt.optimizer=adamw"], "no search space for optim"),
    (["tune", "--methods", "lora", "--lr", "0.1", "--space", "lora.lr=1"], "--lr pins every"),
    (["profile", "--methods", "lorax"], "unknown method 'lorax'; available: full,"),
    (["profile", "--backbone", "vit_bse"], "unknown backbone 'vit_bse'"),
    (["profile", "--methods", "lora", "--set", "lora.rank=x"], "lora.rank='x': expected"),
    (["run", "--methods", "lora", "--set", "lora.select=x"], "lora.select='x': expected one of"),
    (["run", "--protocol", "fptplus", "--select", "last"], "drop --select (or run without"),
    (["run", "--methods", "lora", "--set", "lora.rank=0"], "lora.rank must be an integer >= 1"),
    (["run", "--methods", "lora", "--set", "lora.targets=q,x"], "unknown name(s) x; choose"),
    (["run", "--methods", "lora", "--set", "lora.targets=q,qkv"], "cannot combine q with qkv"),
    (["run", "--methods", "vpt", "--set", "vpt.prompt_length=0"], "vpt.prompt_length must be"),
    (["run", "--methods", "knn", "--set", "knn.k=0"], "knn.k must be an integer >= 1, got 0"),
    (["run", "--methods", "fpt", "--set", "fpt.token_ratio=0"], "must be a number in (0, 1]"),
    (["tune", "--methods", "lora", "--space", "lora.rank=0,8"], "--space lora.rank: each value"),
    (["profile", "--methods", "adapter", "--set", "adapter.style=x"], "must be one of parallel"),
    (["run", "--device", "cpu", "--precision", "bf16"], "--precision bf16 is a GPU autocast"),
    (["run", "--shots", "100000"], "cannot sample 100000 shots per class: class"),
    (["run", "--weights", "README.md"], "README.md: it is not a tensor state dict"),
    (["run", "--results", "README.md"], "--results README.md exists and is not a folder"),
    (
        ["run", "--methods", "partial", "--set", "partial.blocks=5"],
        "at most the backbone's depth 4",
    ),
    (
        ["run", "--methods", "fpt", "--set", "fpt.side_size=20"],
        "a multiple of the backbone's patch",
    ),
    (["profile", "--device", "cpu", "--precision", "fp16"], "fp16 is a GPU autocast; on CPU"),
    (["run", "--methods", "vp", "--set", "vp.pad=32"], "below half the input size 64"),
    (["export", "nope-run-id"], "no record of run 'nope-run-id' in"),
    (["profile", "--img-size", "4"], "--img-size must be >= 8 (the backbone's patch size), got 4"),
    (["list", "methods", "--backbone", "vit_bse"], "unknown backbone 'vit_bse'"),
    (["list", "methods", "--num-classes", "0"], "--num-classes must be >= 1, got 0"),
    (["data", "pretrain-demo", "--seed", "-1"], "--seed must be >= 0, got -1"),
    (
        # submitit's local cluster runs the jobs on this machine: its device is checked now
        [*LOCAL_SLURM, "--precision", "bf16", "--device", "cpu"],
        "--precision bf16 is a GPU autocast",
    ),
    (
        ["run", "--methods", "vp", "--img-size", "96", "--set", "vp.pad=48"],
        "below half the input size 96 (0 = the scaled default), got 48",
    ),
    (
        ["run", "--methods", "fpt-v1", "--set", "fpt-v1.prompt_reduction=2"],
        "fpt-v1.prompt_reduction must be 1 or equal to side_reduction (8), got 2",
    ),
]

_RUN_ALL = textwrap.dedent(
    """
    import json, sys
    from typer.testing import CliRunner
    from bench.cli import app

    out = []
    for argv in json.loads(sys.argv[1]):
        res = CliRunner().invoke(app, argv)
        out.append([res.exit_code, res.stderr.strip(), "torch" in sys.modules])
    print(json.dumps(out))
    """
)


def test_bad_input_fails_before_torch_is_imported(tmp_path) -> None:
    # one fresh interpreter for the table: torch seen after a case means that case imported it
    own = ("list", "data")  # commands without --results
    argv = [
        a if "--results" in a or a[0] in own else [*a, "--results", str(tmp_path / "r")]
        for a, _ in BAD_INPUT
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_ALL, json.dumps(argv)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for (args, fragment), (code, err, torch_loaded) in zip(BAD_INPUT, results, strict=True):
        assert code == 2, (args, code, err)
        assert err.startswith("error: ") and "\n" not in err, (args, err)
        assert fragment in err, (args, err)
        assert not torch_loaded, f"{args} imported torch before failing"
    assert not (tmp_path / "r").exists()


def _other_weights(folder: Path, layout: str) -> tuple[Path, str]:
    """Weights of another ViT than demo-vit (96 wide, 4 blocks), saved as `layout`: the file,
    and what the message says of it."""
    if layout == "safetensors":
        from safetensors.numpy import save_file

        path = folder / "narrow.safetensors"
        save_file({"patch_embed.proj.weight": np.zeros((5, 3, 8, 8), np.float32)}, str(path))
        return (
            path,
            "'patch_embed.proj.weight' projects patches to width 5, but demo-vit is 96 wide",
        )
    import timm
    import torch

    from bench.backbone_geometry import DEMO_VIT_KWARGS

    path = folder / f"{layout}.pth"
    if layout == "deeper":  # demo-vit's tensors and a fifth block's
        state = timm.create_model("vit_small_patch16_224", **DEMO_VIT_KWARGS).state_dict()
        state |= {
            k.replace("blocks.0.", "blocks.4."): v for k, v in state.items() if "blocks.0." in k
        }
        torch.save({"state_dict": state}, path)
        return path, "it holds 5 transformer blocks, but demo-vit has 4; pass weights of this"
    state = timm.create_model("test_vit").state_dict()  # 64 wide; an OrderedDict with _metadata
    if layout == "pth":
        torch.save(state, path)
        return (
            path,
            "'patch_embed.proj.weight' projects patches to width 64, but demo-vit is 96 wide",
        )
    # a training checkpoint: the state dict of a DDP-wrapped model under "model", and more
    wrapped = {f"module.{k}": torch.nn.Parameter(v) for k, v in state.items()}
    torch.save({"epoch": 3, "model": wrapped, "optimizer": {"state": {}}}, path)
    entry = "'model.module.patch_embed.proj.weight'"
    return path, f"{entry} projects patches to width 64, but demo-vit is 96 wide"


@pytest.mark.parametrize("layout", ["safetensors", "pth", "pth-checkpoint", "deeper"])
def test_weights_of_another_shape_fail_before_torch_as_later(tmp_path, layout) -> None:
    from bench.backbones import resolve_backbone

    path, said = _other_weights(tmp_path, layout)
    req = EarlyRequest(methods=["linear"], datasets=["demo"], seeds=[0], weights=path)
    with pytest.raises(UserError) as early:
        precheck.precheck(req)
    with pytest.raises(UserError) as full:
        resolve_backbone("demo-vit", pretrained=True, weights=path)
    assert str(early.value) == str(full.value)
    assert said in str(early.value)
    argv = ["run", "--weights", str(path), "--results", str(tmp_path / "r")]
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_ALL, json.dumps([argv])],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    [(code, err, torch_loaded)] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (code, err) == (2, f"error: {early.value}")
    assert not torch_loaded


@pytest.fixture(autouse=True)
def _manifest(monkeypatch) -> None:
    """The manifest's methods even though this process holds the registry (the CLI's case)."""
    manifest = method_manifest.load_manifest()
    assert manifest is not None, "stale: regenerate it with `python -m bench.method_manifest`"
    monkeypatch.setattr(precheck, "early_methods", lambda: precheck.Methods(manifest["methods"]))


def _grid(**changes) -> EarlyRequest:
    return EarlyRequest(methods=["core"], datasets=["demo"], seeds=[0]).replace(**changes)


# GridRequest fields -> the same change to both requests; each one is wrong somewhere
SAME_MESSAGE = [
    {"methods": ["all", "nope"]},
    {"methods": []},
    {"datasets": []},
    {"methods": ["fpt"], "sets": {"fpt": {"head_init": "x"}}},
    {"methods": ["vpt"], "sets": {"vpt": {"backbone_dropout": "1.5"}}},
    {"methods": ["vpt"], "sets": {"vpt": {"prompt_length": "1e3"}}},
    {"methods": ["lora"], "sets": {"lora": {"lr": "-1"}}},
    {"methods": ["lora"], "sets": {"lora": {"weight_decay": "inf"}}},
    {"methods": ["lora"], "sets": {"lora": {"lr_step": "batch"}}},
    {"methods": ["lora"], "sets": {"lora": {"warmup_epochs": "none"}}},
    {"methods": ["linear"], "sets": {"linear": {"preload": "maybe"}}},
    {"methods": ["lora"], "sets": {"core": {"lr": "1"}}},
    {"methods": ["lora"], "sets": {"lora": {"rank": "0"}}},
    {"methods": ["lora"], "sets": {"lora": {"targets": "v,attn"}}},
    {"methods": ["fpt"], "sets": {"fpt": {"importance": "local"}}},
    {"methods": ["mlp-head"], "sets": {"mlp-head": {"dropout": "1"}}},
    {"methods": ["partial"], "sets": {"partial": {"blocks": "5"}}},
    {"methods": ["fpt"], "sets": {"fpt": {"side_size": "60"}}},
    {"methods": ["fpt"], "sets": {"fpt": {"side_reduction": "3"}}},
    {"methods": ["vp"], "sets": {"vp": {"pad": "32"}}},
    {"methods": ["vp"], "img_size": 96, "sets": {"vp": {"pad": "48"}}},
    {"methods": ["fpt-v1"], "sets": {"fpt-v1": {"prompt_reduction": "2"}}},
    {"split_seeds": [0]},
    {"img_size": 4},
    {"batch_size": 0},
    {"warmup_epochs": -1.0},
]


@pytest.mark.parametrize("changes", SAME_MESSAGE)
def test_the_early_message_is_the_full_checks(changes) -> None:
    from bench.grid import GridRequest

    with pytest.raises(UserError) as full:
        GridRequest(methods=["core"], datasets=["demo"], seeds=[0], backbone="demo-vit").replace(
            **changes
        ).checked()
    with pytest.raises(UserError) as early:
        precheck.precheck(_grid(**changes))
    assert str(early.value) == str(full.value)


# method -> its --space and --set; each one is wrong somewhere
SAME_SPACE_MESSAGE = [
    ("lora", {"rank": "1,abc"}, {}),
    ("lora", {"nope": "1"}, {}),
    ("lora", {"optimizer": "sgd,adamw"}, {}),
    ("lora", {"rank": "2,4"}, {"rank": "4"}),
    ("lora", {"lr": "0.1,-1"}, {}),
    ("lora", {"weight_decay": "nan"}, {}),
    ("lora", {"rank": "8,0"}, {}),
    ("adapter", {"style": "parallel,series"}, {}),
    ("vpt", {"prompt_length": "5"}, {"optimizer": "adamw"}),
]


@pytest.mark.parametrize(("method", "space", "sets"), SAME_SPACE_MESSAGE)
def test_the_early_space_message_is_the_full_checks(method, space, sets) -> None:
    from bench.grid import GridRequest
    from bench.tuning_plan import resolve_space

    tune = TuneRequest(spaces={method: space})
    req = GridRequest(
        methods=[method], datasets=["demo"], seeds=[0], backbone="demo-vit", sets={method: sets}
    )
    with pytest.raises(UserError) as full:
        resolve_space(method, req.checked(), tune)
    with pytest.raises(UserError) as early:
        precheck.precheck(_grid(methods=[method], sets={method: sets}, tune=tune))
    assert str(early.value) == str(full.value)


def test_what_the_full_check_takes_the_early_one_takes() -> None:
    from bench.protocols import find_protocol

    precheck.precheck(_grid(methods=["all", "fpt", "core"]))
    precheck.precheck(_grid(methods=["fpt"], sets={"fpt": {"lr": "0.1", "dropout": "0.1"}}))
    precheck.precheck(_grid(methods=["vpt"], sets={"vpt": {"head_init": "kmnp", "decay": "all"}}))
    precheck.precheck(_grid(datasets=["pathmnist_224"], shots=[1, 5], split_seeds=[0, 1]))
    for name in ("ept-table1", "fptplus"):
        precheck.precheck(_grid(), find_protocol(name))
    spaces = {"fpt": {"lr": "0.1,0.01"}, "vpt": {"prompt_length": "5,10"}}
    precheck.precheck(_grid(tune=TuneRequest(spaces=spaces)))
    # EPT's protocol pins the rate for every method: only the methods' own knobs are searched
    precheck.precheck(_grid(tune=TuneRequest()), find_protocol("ept-table1"))
    precheck.precheck(_grid(backbone="vit_base_patch16_224.augreg_in21k", datasets=["demo"]))
    precheck.precheck(_grid(backbone="hf-hub:MahmoodLab/UNI"))  # its cache: tests/test_hf_hub.py


def test_a_method_the_manifest_does_not_know_waits_for_the_registry(monkeypatch) -> None:
    # a user's own method file sets the manifest aside: nothing about methods is refused early
    monkeypatch.setattr(precheck, "early_methods", EARLY_METHODS)
    monkeypatch.delitem(sys.modules, "methods.registry", raising=False)  # as in a fresh CLI
    monkeypatch.setattr(precheck, "load_manifest", lambda: None)
    precheck.precheck(_grid(methods=["my-method"], sets={"my-method": {"knob": "x"}}))
    with pytest.raises(UserError, match="unknown dataset"):
        precheck.precheck(_grid(methods=["my-method"], datasets=["nope"]))


def test_a_process_holding_the_registry_trusts_it(monkeypatch) -> None:
    # a method registered in this process (a notebook's, a test's) is in no file: not refused
    import methods  # noqa: F401

    monkeypatch.setattr(precheck, "early_methods", EARLY_METHODS)
    assert precheck.early_methods() is None
    precheck.precheck(_grid(methods=["registered-here"]))


def test_an_unavailable_method_says_what_it_needs(monkeypatch) -> None:
    monkeypatch.setattr(method_manifest.metadata, "version", lambda name: "0.7.0")
    with pytest.raises(UserError, match=r"^oft needs peft >= 0\.16\.0; installed 0\.7\.0"):
        precheck.precheck(_grid(methods=["oft"]))
    # 'all' leaves it out, as the registry's list_methods() does
    precheck.precheck(_grid(methods=["all"]))


def test_the_augmentation_names_are_the_presets() -> None:
    from bench.transforms import AUGMENTATIONS

    assert tuple(AUGMENTATIONS) == AUGMENT_NAMES


def test_too_many_shots_fail_early_with_the_samplers_message(tiny_data_root) -> None:
    from bench.catalog import get_card
    from bench.data import few_shot, load_dataset

    req = _grid(datasets=["pneumoniamnist"], data_root=tiny_data_root, shots=[1, 500])
    with pytest.raises(UserError) as early:
        precheck.precheck(req, data=True)
    with pytest.raises(UserError) as full:
        few_shot(load_dataset(get_card("pneumoniamnist"), tiny_data_root), 500, 0, tiny_data_root)
    assert str(early.value) == str(full.value)
    assert str(early.value).startswith("cannot sample 500 shots per class: class 'normal' has")
    precheck.precheck(req.replace(shots=[1, 2]), data=True)  # what the sampler takes passes
