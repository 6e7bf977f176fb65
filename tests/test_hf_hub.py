"""hf-hub:ORG/NAME backbones from a local Hugging Face cache the tests write, offline: the weights
load exactly, the hub's pretrained config reaches the preprocessing and the record, a missing
model is one line naming --weights, and the reachability probe goes through the proxy."""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from conftest import write_medmnist_npz
from safetensors.torch import save_file
from typer.testing import CliRunner

from bench import backbone_config as config_module
from bench import weights as weights_module
from bench.backbone_config import backbone_config
from bench.backbones import (
    backbone_patch_size,
    create_backbone,
    default_img_size,
    resolve_backbone,
)
from bench.cli import app
from bench.errors import UserError
from bench.eval_view import EvalView
from bench.harness import build_model
from bench.hub_access import hub_endpoint, reachable, unavailable_reason
from bench.transforms import Preprocess

REPO = "medpeft-test/tiny-vit"
NAME = f"hf-hub:{REPO}"
# Distinctive, so that seeing them downstream proves they came from the hub's config.json.
MEAN, STD = [0.31, 0.42, 0.53], [0.21, 0.26, 0.17]
MODEL_ARGS = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
PRETRAINED_CFG = {
    "input_size": [3, 32, 32],
    "fixed_input_size": True,
    "interpolation": "bicubic",
    "crop_pct": 0.9,
    "crop_mode": "center",
    "mean": MEAN,
    "std": STD,
    "num_classes": 0,
    "first_conv": "patch_embed.proj",
    "classifier": "head",
}


def hub_config_json(architecture: str = "test_vit") -> dict:
    """config.json as timm's push_to_hf_hub writes it."""
    return {
        "architecture": architecture,
        "num_classes": 0,
        "num_features": MODEL_ARGS["embed_dim"],
        "model_args": MODEL_ARGS,
        "pretrained_cfg": PRETRAINED_CFG,
    }


def tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(7)
    model = timm.create_model("test_vit", pretrained=False, num_classes=0, **MODEL_ARGS)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def write_hub_repo(
    cache: Path, repo: str, config: dict, state: dict[str, torch.Tensor] | None
) -> Path:
    """A repository in the HF cache layout: models--ORG--NAME/refs/main names a snapshot holding
    config.json and (given a state) model.safetensors. Returns the snapshot folder."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    (snapshot / "config.json").write_text(json.dumps(config))
    if state is not None:
        save_file(state, str(snapshot / "model.safetensors"))
    return snapshot


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF cache under tmp_path, offline; huggingface_hub read its settings at import,
    so its constants are patched as well as the environment (which subprocesses inherit)."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    # configs and shapes are cached per name: another test's cache must not answer
    config_module._hub_config.cache_clear()
    weights_module._model_shapes.cache_clear()
    yield cache
    config_module._hub_config.cache_clear()
    weights_module._model_shapes.cache_clear()


def test_hub_backbone_loads_the_cached_weights_offline(hub_cache: Path) -> None:
    state = tiny_state()
    write_hub_repo(hub_cache, REPO, hub_config_json(), state)
    source = resolve_backbone(NAME, pretrained=True, weights=None)
    assert (source.name, source.weights) == (NAME, None)
    config = backbone_config(NAME)
    assert config.architecture == "test_vit" and config.model_args == MODEL_ARGS
    assert (default_img_size(NAME), backbone_patch_size(NAME)) == (32, 8)
    model = create_backbone(source, num_classes=3)
    got = model.state_dict()
    for key, value in state.items():
        assert torch.equal(got[key], value), key
    assert model.get_classifier().out_features == 3  # a fresh head: the file has none
    assert list(model.pretrained_cfg["mean"]) == MEAN


def test_hub_pretrained_cfg_reaches_the_preprocessing(hub_cache: Path) -> None:
    write_hub_repo(hub_cache, REPO, hub_config_json(), tiny_state())
    source = resolve_backbone(NAME, pretrained=True, weights=None)
    model = create_backbone(source, num_classes=2, img_size=32)
    prep = Preprocess.for_backbone(dict(model.pretrained_cfg), img_size=32)
    assert (list(prep.mean), list(prep.std)) == (MEAN, STD)
    assert prep.eval_view == EvalView("bicubic", 0.9, "center")
    # the same numbers timm's own eval transform would be built from for this model
    data = timm.data.resolve_data_config({}, model=model)
    view = prep.eval_view
    assert (view.interpolation, view.crop_pct, view.crop_mode) == (
        data["interpolation"],
        data["crop_pct"],
        data["crop_mode"],
    )


def test_cli_runs_a_hub_backbone_cell_offline_and_records_it(
    hub_cache: Path, tmp_path: Path
) -> None:
    write_hub_repo(hub_cache, REPO, hub_config_json(), tiny_state())
    data = tmp_path / "data"
    data.mkdir()
    write_medmnist_npz(data / "pneumoniamnist.npz")
    results = tmp_path / "results"
    args = ["run", "--backbone", NAME, "--datasets", "pneumoniamnist", "--methods", "linear",
            "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--no-progress",
            "--data-root", str(data), "--results", str(results)]  # fmt: skip
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (path,) = results.glob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "ok", record.get("error")
    assert record["backbone"]["name"] == NAME and record["config"]["backbone"] == NAME
    assert record["backbone"]["pretrained"] is True
    assert record["backbone"]["architecture"] == "test_vit"
    assert record["config"]["img_size"] == 32  # the hub config's native size
    assert record["normalization"] == {"mean": MEAN, "std": STD}
    pre = record["preprocess"]
    assert (pre["interpolation"], pre["crop_pct"], pre["crop_mode"]) == ("bicubic", 0.9, "center")
    assert pre["resize_to"] == 35  # floor(32 / 0.9): resized, then the centre 32 px


@pytest.mark.parametrize(
    "name",
    [
        "hf-hub:medpeft-test/absent",  # its config.json
        "vit_tiny_patch16_224.augreg_in21k",  # a timm ViT's pretrained weights
    ],
)
def test_a_real_run_checks_the_hub_cache_before_torch(hub_cache: Path, name: str) -> None:
    from bench.backbone_options import weights_source
    from bench.precheck import EarlyRequest, precheck

    if name.startswith("hf-hub:"):
        repo, config, state = name.removeprefix("hf-hub:"), hub_config_json(), None
    elif (source := weights_source(name)) is not None:
        repo, config, state = source["hf_hub_id"], {}, tiny_state()
    else:
        pytest.skip("timm_layouts.json was written for another timm version")
    req = EarlyRequest(methods=["linear"], datasets=["demo"], seeds=[0], backbone=name)
    with pytest.raises(UserError) as early:
        precheck(req, data=True)
    with pytest.raises(UserError) as full:
        resolve_backbone(name, pretrained=True, weights=None)
    assert str(early.value) == str(full.value)
    assert "not in the local Hugging Face cache" in str(early.value) or (
        "are not cached and HF_HUB_OFFLINE is set" in str(early.value)
    )
    precheck(req)  # a dry run plans without it (its plan says so in a note)
    if state is not None:  # untrained, a timm ViT needs no file (a hub one its config)
        precheck(req.replace(pretrained=False), data=True)
    write_hub_repo(hub_cache, repo, config, state)
    precheck(req, data=True)  # cached: the full check reads it


def test_url_weights_count_as_there_once_in_torchs_cache(tmp_path, monkeypatch) -> None:
    from bench.backbone_config import weights_missing

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = "http://weights.medpeft.invalid/vit/B_16.npz"  # the name does not resolve
    missing = weights_missing("vit_x", {"url": url}, "vit_x")
    assert str(missing).startswith(
        f"pretrained weights for 'vit_x' are not cached and {url} cannot"
    )
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "B_16.npz").write_bytes(b"weights")
    assert weights_missing("vit_x", {"url": url}, "vit_x") is None
    assert str(weights_missing("vit_x", {}, "vit_x")) == (
        "timm has no pretrained weights for 'vit_x'; pass --weights PATH or --no-pretrained"
    )


def test_missing_from_cache_offline_is_one_line_naming_weights(hub_cache: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(UserError) as err:
        resolve_backbone("hf-hub:medpeft-test/absent", pretrained=True, weights=None)
    assert time.perf_counter() - start < 5
    text = str(err.value)
    assert "\n" not in text
    assert "'hf-hub:medpeft-test/absent'" in text and "HF_HUB_OFFLINE" in text
    assert "connect" in text and "--weights FILE" in text


def test_a_timm_that_cannot_use_the_installed_hub_client_says_so(
    hub_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """timm before 1.0.21 turns its hub support off under huggingface_hub >= 1.0 and then blames
    a missing package; the suite names the real cause and the fix, for hub names and for registry
    weights alike."""
    from timm.models import _hub

    write_hub_repo(hub_cache, REPO, hub_config_json(), tiny_state())
    monkeypatch.setattr(_hub, "_has_hf_hub", False)
    for name in (NAME, "vit_tiny_patch16_224.augreg_in21k"):
        with pytest.raises(UserError) as err:
            resolve_backbone(name, pretrained=True, weights=None)
        text = str(err.value)
        assert "\n" not in text and repr(name) in text
        assert "needs huggingface_hub < 1.0): pip install -U 'timm>=1.0.21'" in text


def test_cli_missing_hub_model_prints_the_line_not_a_traceback(
    hub_cache: Path, tmp_path: Path
) -> None:
    args = ["run", "--backbone", "hf-hub:medpeft-test/absent", "--datasets", "demo",
            "--methods", "linear", "--epochs", "1", "--results", str(tmp_path / "r")]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code != 0
    assert "Traceback" not in res.output and "--weights FILE" in res.output
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("*.json"))


def test_cached_config_without_weights_offline_names_weights_and_architecture(
    hub_cache: Path,
) -> None:
    write_hub_repo(hub_cache, REPO, hub_config_json(), state=None)
    with pytest.raises(UserError, match=r"not cached.*HF_HUB_OFFLINE.*--weights PATH.*test_vit"):
        resolve_backbone(NAME, pretrained=True, weights=None)
    # without weights nothing is missing: the architecture comes from the cached config.json
    assert resolve_backbone(NAME, pretrained=False, weights=None).pretrained is False


def test_weights_file_with_a_cached_hub_config(hub_cache: Path, tmp_path: Path) -> None:
    write_hub_repo(hub_cache, REPO, hub_config_json(), state=None)
    state = tiny_state()
    path = tmp_path / "uni-like.safetensors"
    save_file(state, str(path))
    source = resolve_backbone(NAME, pretrained=True, weights=path)
    assert source.weights == path and len(source.weights_sha256) == 64
    model = create_backbone(source, num_classes=2)
    got = model.state_dict()
    for key, value in state.items():
        assert torch.equal(got[key], value), key
    assert list(model.pretrained_cfg["mean"]) == MEAN  # the hub config still describes it


def test_weights_of_another_shape_for_a_hub_backbone_fail_clearly(
    hub_cache: Path, tmp_path: Path
) -> None:
    write_hub_repo(hub_cache, REPO, hub_config_json(), state=None)
    path = tmp_path / "wrong.safetensors"
    save_file({"pos_embed": torch.zeros(5)}, str(path))  # 1-D where the model has 3-D
    with pytest.raises(UserError, match=r"pos_embed.*1-D.*expected 3-D"):
        resolve_backbone(NAME, pretrained=True, weights=path)


@pytest.mark.parametrize(
    ("architecture", "message"),
    [("resnet18", "not a timm VisionTransformer-like"), ("no_such_net", "does not know")],
)
def test_unsupported_hub_architecture_fails_before_training(
    hub_cache: Path, architecture: str, message: str
) -> None:
    config = hub_config_json(architecture) | {"model_args": {}}
    write_hub_repo(hub_cache, REPO, config, state=None)
    with pytest.raises(UserError, match=message) as err:
        resolve_backbone(NAME, pretrained=False, weights=None)
    assert NAME in str(err.value) and architecture in str(err.value)


def test_an_eval_view_the_suite_cannot_apply_fails_before_training(hub_cache: Path) -> None:
    config = hub_config_json()
    config["pretrained_cfg"] = PRETRAINED_CFG | {"interpolation": "lanczos"}
    write_hub_repo(hub_cache, REPO, config, state=None)
    with pytest.raises(
        UserError, match=r"backbone 'hf-hub:medpeft-test/tiny-vit': .*'lanczos' inter"
    ):
        resolve_backbone(NAME, pretrained=False, weights=None)


def test_build_model_reads_the_hub_cfg_before_any_method_wrapper(hub_cache: Path) -> None:
    from bench.config import CellConfig

    write_hub_repo(hub_cache, REPO, hub_config_json(), tiny_state())
    source = resolve_backbone(NAME, pretrained=True, weights=None)
    cell = CellConfig(method="lora", dataset="d", seed=0, backbone=NAME, pretrained=True,
                      weights=None, weights_sha256=None, epochs=1, batch_size=2, img_size=32,
                      device="cpu", precision="fp32", optimizer="adamw", lr=1e-3,
                      weight_decay=0.0, warmup_epochs=0.0, grad_clip=1.0)  # fmt: skip
    *_, cfg = build_model(cell, source, num_classes=2)
    assert (list(cfg["mean"]), cfg["crop_pct"], cfg["interpolation"]) == (MEAN, 0.9, "bicubic")


# ----------------------------------------------------------------------- the probe


class _Proxy(http.server.BaseHTTPRequestHandler):
    """A proxy that answers every request itself and remembers the request lines."""

    seen: list[str]

    def do_HEAD(self) -> None:
        self.seen.append(self.requestline)
        self.send_response(200)
        self.end_headers()

    def do_CONNECT(self) -> None:
        self.seen.append(self.requestline)
        self.send_response(403)  # no tunnel: the probe must not call that reachable
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch):
    seen: list[str] = []
    handler = type("Proxy", (_Proxy,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    for var in ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.setenv("HTTPS_PROXY", url)
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield seen
    server.shutdown()
    server.server_close()


def test_probe_goes_through_the_proxy_to_hf_endpoint(proxy: list[str], monkeypatch) -> None:
    # a name that resolves nowhere: only the proxy can have answered
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.medpeft.invalid")
    assert hub_endpoint() == "http://hub.medpeft.invalid"
    assert reachable(hub_endpoint()) is True
    assert unavailable_reason() is None
    assert proxy == ["HEAD http://hub.medpeft.invalid HTTP/1.1"] * 2  # one request per probe


def test_https_probe_asks_the_proxy_for_a_tunnel(proxy: list[str], monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.medpeft.invalid")
    assert reachable(hub_endpoint()) is False  # the proxy refused the tunnel
    assert unavailable_reason() == "https://hub.medpeft.invalid cannot be reached"
    # (http.client asks for the tunnel in HTTP/1.0 or 1.1, by Python version)
    assert [line.rsplit(" ", 1)[0] for line in proxy] == ["CONNECT hub.medpeft.invalid:443"] * 2


def test_no_proxy_hosts_and_offline_skip_the_proxy(proxy: list[str], monkeypatch) -> None:
    monkeypatch.setenv("NO_PROXY", "hub.medpeft.invalid")
    assert reachable("http://hub.medpeft.invalid") is False  # direct: the name does not resolve
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert unavailable_reason() == "HF_HUB_OFFLINE is set"
    assert proxy == []


def test_a_dry_run_says_when_the_weights_are_not_there(monkeypatch, tmp_path) -> None:
    from bench.errors import UserError
    from bench.grid import GridRequest, inputs, plan

    def unreachable(name: str) -> None:
        raise UserError(f"pretrained weights for {name!r} are not cached and the hub is offline")

    monkeypatch.setattr(inputs, "check_weights_reachable", unreachable)
    req = GridRequest(methods=["linear"], datasets=["pneumoniamnist"], seeds=[0],
                      backbone="vit_tiny_patch16_224", data_root=tmp_path, results=tmp_path / "r")  # fmt: skip
    notes = plan(req, dry_run=True, progress=False).notes
    assert any(n.startswith("backbone weights: pretrained weights for 'vit_tiny_patch16_224'")
               and n.endswith("(the real run stops here)") for n in notes), notes  # fmt: skip
    for quiet in (req.replace(pretrained=False), req.replace(backbone="demo-vit")):
        assert not [n for n in plan(quiet, dry_run=True, progress=False).notes if "weights" in n]
