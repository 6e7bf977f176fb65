"""Option parsing and run ids: what users type must resolve exactly, and bad input must say why."""

from __future__ import annotations

import pytest

from bench.config import CellConfig, coerce, parse_int_list, parse_name_list, parse_sets
from bench.errors import UserError


def cell(**over) -> CellConfig:
    base = dict(
        method="linear", dataset="demo", seed=0, backbone="demo-vit", pretrained=True, weights=None,
        weights_sha256=None, epochs=3, batch_size=8, img_size=64, device="cpu", precision="fp32",
        optimizer="adamw", lr=0.01, weight_decay=0.0, warmup_epochs=1.0, grad_clip=1.0, hparams={},
    )  # fmt: skip
    return CellConfig(**{**base, **over})


def test_parse_sets() -> None:
    assert parse_sets(["vpt.prompt_length=50", "vpt.deep=false", "lora.lr=1e-3"]) == {
        "vpt": {"prompt_length": "50", "deep": "false"},
        "lora": {"lr": "1e-3"},
    }


@pytest.mark.parametrize(
    "bad", ["vpt", "vpt.length", "vpt.=3", ".x=1", "vpt.x=", "vpt x=1", "vpt.1x=2"]
)
def test_parse_sets_malformed(bad: str) -> None:
    with pytest.raises(UserError, match="malformed --set"):
        parse_sets([bad])


def test_coerce_follows_default_type() -> None:
    assert coerce("50", 10, what="x") == 50
    assert coerce("1e-3", 0.1, what="x") == pytest.approx(1e-3)
    assert coerce("no", True, what="x") is False
    assert coerce("qkv,proj", ("qkv",), what="x") == ("qkv", "proj")
    assert coerce("7", None, what="x") == 7
    assert coerce("global", "cls", what="x") == "global"
    with pytest.raises(UserError, match="type int"):
        coerce("ten", 10, what="vpt.prompt_length")
    with pytest.raises(UserError, match="type bool"):
        coerce("maybe", False, what="vpt.deep")


def test_parse_int_list() -> None:
    assert parse_int_list("2,0,1,1", option="--seeds") == [0, 1, 2]
    assert parse_int_list("0-3", option="--seeds") == [0, 1, 2, 3]
    for bad in ("", "a", "-1", "3-1", "1.5", "0,,x"):
        with pytest.raises(UserError, match="--seeds"):
            parse_int_list(bad, option="--seeds")


def test_parse_name_list() -> None:
    assert parse_name_list("full, linear,,full") == ["full", "linear"]


def test_run_id_is_stable_and_sensitive() -> None:
    a = cell()
    assert a.run_id == cell().run_id
    assert a.run_id.startswith("demo-linear-s0-")
    for change in (
        {"seed": 1},
        {"lr": 0.02},
        {"hparams": {"k": 1}},
        {"epochs": 4},
        {"pretrained": False},
    ):
        assert cell(**change).run_id != a.run_id, change
    # The weights' content identifies them, not where the file lives.
    assert (
        cell(weights="/a/w.pth", weights_sha256="abc").run_id
        == cell(weights="/b/w.pth", weights_sha256="abc").run_id
    )


def test_core_resolves_to_canonical_names() -> None:
    """`--methods core` and `--methods fpt-plus` must give the same cells (same run ids)."""
    from bench.grid import resolve_methods

    core = resolve_methods(["core"])
    assert "fpt-plus" in core and "fpt" not in core
    assert resolve_methods(["fpt", "fpt-plus"]) == ["fpt-plus"]


def test_late_fields_keep_older_run_ids() -> None:
    """`compile` joined the cell after version 2: at its default it leaves the run id as it was
    (this id was computed by the config module before the field existed), so finished records
    still match and are skipped; compiled runs are other cells."""
    kw = dict(method="lora", dataset="derm", seed=1, backbone="vit_base_patch16_224",
              pretrained=True, weights=None, weights_sha256=None, epochs=10, batch_size=32,
              img_size=224, device="cuda", precision="bf16", optimizer="adamw", lr=1e-3,
              weight_decay=0.0, warmup_epochs=1.0, grad_clip=1.0, hparams={"r": 8})  # fmt: skip
    assert CellConfig(**kw).run_id == "derm-lora-s1-04c52a4ace8f"
    assert CellConfig(**kw, compile=True).run_id == "derm-lora-s1-6f763070c2e7"
