"""LoRA's q/v form (`lora.targets=q,v`, methods/qkv_split.py): the LoRA paper's independent
updates of W_q and W_v on a timm ViT whose fused qkv is split into q, k and v Linears."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

import methods
from bench.artefacts import save_adapter, trained
from bench.backbones import create_backbone, resolve_backbone
from bench.config import CellConfig
from bench.harness import build_model
from methods.peft_inject import LINEAR_TARGETS
from methods.qkv_split import QKV_PATH, SplitQkv, fuse_qkv, split_qkv
from tests.conftest import tiny_vit

C = 3  # tiny_vit classes


def lora(model: nn.Module, **hparams) -> nn.Module:
    spec = methods.get_method("lora")
    return spec.build(model, **{**spec.hparams, **hparams})


def backbone_and_qv(dtype: torch.dtype = torch.float32, **vit) -> tuple[nn.Module, nn.Module]:
    """A frozen tiny ViT and a q/v LoRA on a copy of it (same weights)."""
    torch.manual_seed(0)
    base = tiny_vit(C, **vit).to(dtype)
    return base, lora(copy.deepcopy(base), targets="q,v")


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def effective(layer: nn.Module) -> torch.Tensor:
    """A projection's weight as it acts: the base weight plus any LoRA update (α/r)·B·A."""
    if isinstance(layer, BaseTunerLayer):
        return layer.get_base_layer().weight + layer.get_delta_weight("default")
    return layer.weight


def one_step(model: nn.Module) -> None:
    """One AdamW step on a cross-entropy loss that is not zero (random labels)."""
    g = torch.Generator().manual_seed(1)
    dtype = model.get_classifier().weight.dtype
    x = torch.randn(4, 3, 32, 32, generator=g, dtype=dtype)
    y = torch.randint(0, C, (4,), generator=g)
    opt = torch.optim.AdamW(trainable(model).values(), lr=1e-2)
    loss = nn.functional.cross_entropy(model.train()(x), y)
    assert loss.item() > 0
    loss.backward()
    opt.step()
    opt.zero_grad()


@pytest.mark.parametrize("vit", [{}, {"qkv_bias": False}, {"embed_dim": 48, "num_heads": 3}])
@pytest.mark.parametrize("rank", [1, 8])
def test_count_is_the_papers_and_equals_the_fused_qkv_count(vit: dict, rank: int) -> None:
    base, qv = backbone_and_qv(**vit)
    qv = lora(copy.deepcopy(base), targets="q,v", rank=rank)
    fused = lora(copy.deepcopy(base), rank=rank)
    d, depth = base.embed_dim, len(base.blocks)
    head = sum(p.numel() for p in base.get_classifier().parameters())
    paper = depth * 2 * rank * (d + d) + head  # A_q, B_q, A_v, B_v per block
    count = sum(p.numel() for p in trainable(qv).values())
    assert count == paper == sum(p.numel() for p in trainable(fused).values())


def test_vit_b16_count_matches_the_default_lora() -> None:
    import timm

    vit_b = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=7)
    model = lora(vit_b.requires_grad_(False), targets="q,v")
    # 12 blocks x 2 x 8 x (768 + 768), + 5,383 for the head: the fused qkv's 300,295
    assert sum(p.numel() for p in trainable(model).values()) == 300_295


def test_k_is_untouched_and_q_v_change_after_a_step() -> None:
    base, model = backbone_and_qv()
    one_step(model)
    d = base.embed_dim
    for block, pretrained in zip(model.blocks, base.blocks, strict=True):
        split, fused = block.attn.qkv, pretrained.attn.qkv
        assert isinstance(split, SplitQkv)
        assert type(split.k) is nn.Linear  # no adapter on K
        assert dict(split.k.named_parameters()).keys() == {"weight", "bias"}
        assert torch.equal(split.k.weight, fused.weight[d : 2 * d])
        assert torch.equal(split.k.bias, fused.bias[d : 2 * d])
        for i, part in ((0, split.q), (2, split.v)):
            assert isinstance(part, BaseTunerLayer)
            assert not torch.equal(effective(part), fused.weight[i * d : (i + 1) * d])
            assert torch.equal(part.get_base_layer().weight, fused.weight[i * d : (i + 1) * d])


def test_the_fused_default_changes_k_too() -> None:
    """The contrast: one LoRA on the fused qkv moves K's rows after the same step."""
    torch.manual_seed(0)
    base = tiny_vit(C)
    model = lora(copy.deepcopy(base))
    one_step(model)
    d = base.embed_dim
    k_rows = effective(model.blocks[0].attn.qkv)[d : 2 * d]
    assert not torch.equal(k_rows, base.blocks[0].attn.qkv.weight[d : 2 * d])


@pytest.mark.parametrize("vit", [{}, {"qkv_bias": False}])
def test_split_copies_the_fused_layer_exactly(vit: dict) -> None:
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        base = tiny_vit(C, **vit).to(dtype)
        split = split_qkv(copy.deepcopy(base))
        fused, parts = base.blocks[0].attn.qkv, split.blocks[0].attn.qkv
        weights = torch.cat([parts.q.weight, parts.k.weight, parts.v.weight])
        assert torch.equal(weights, fused.weight)  # bit-exact copies
        assert (fused.bias is None) == (parts.q.bias is None)
        assert not any(p.requires_grad for p in split.parameters())  # still frozen
        x = torch.randn(2, 5, base.embed_dim, dtype=dtype)
        # three GEMMs instead of one: the same numbers, up to the BLAS's blocking (float64)
        torch.testing.assert_close(
            parts(x), fused(x), rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-14
        )
        assert torch.equal(fuse_qkv(split).blocks[0].attn.qkv.weight, fused.weight)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_step_zero_logits_are_the_backbones(dtype: torch.dtype) -> None:
    base, model = backbone_and_qv(dtype)
    x = torch.randn(3, 3, 32, 32, dtype=dtype)
    with torch.no_grad():
        adapted, expected = model.eval()(x), base.eval()(x)
        split_only = split_qkv(copy.deepcopy(base)).eval()(x)
    assert torch.equal(adapted, split_only)  # B = 0: LoRA adds exact zeros
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(adapted, expected, rtol=0, atol=tol)


def test_gradients_reach_only_q_v_adapters_and_the_head() -> None:
    _, model = backbone_and_qv()
    expected = {f"blocks.{b}.attn.qkv.{p}.lora_{ab}.default.weight"
                for b in range(2) for p in "qv" for ab in "AB"} | {"head.weight", "head.bias"}  # fmt: skip
    assert set(trainable(model)) == expected
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    nn.functional.cross_entropy(model.train()(x), y).backward()
    reached = {n for n, p in model.named_parameters() if p.grad is not None}
    assert reached == expected
    # B = 0 at step 0, so A's gradient is zero then; after one step it is not
    one_step(model)
    nn.functional.cross_entropy(model(x), y).backward()
    assert all(model.get_parameter(n).grad.abs().sum() > 0 for n in expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_merge_matches_and_leaves_a_plain_timm_vit(dtype: torch.dtype) -> None:
    base, model = backbone_and_qv(dtype)
    one_step(model)
    x = torch.randn(3, 3, 32, 32, dtype=dtype)
    with torch.no_grad():
        before = model.eval()(x)
        merged = methods.get_method("lora").merge(model).eval()
        after = merged(x)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(after, before, rtol=0, atol=tol)
    assert not any(isinstance(m, (BaseTunerLayer, SplitQkv)) for m in merged.modules())
    assert merged.state_dict().keys() == base.state_dict().keys()
    for block in merged.blocks:
        assert type(block.attn.qkv) is nn.Linear


def test_merged_q_v_lora_costs_what_the_backbone_does() -> None:
    from bench.backbone_config import weightless
    from bench.measure import flops_per_image

    _, model = backbone_and_qv()
    out = flops_per_image(model, img_size=32, device="cpu", merge=methods.get_method("lora").merge,
                          backbone=weightless(lambda: tiny_vit(C)))  # fmt: skip
    assert out["merged_inference_gflops"] == out["backbone_gflops"]
    assert out["inference_overhead_gflops"] == 0.0


@pytest.mark.parametrize(
    ("targets", "match"),
    [
        ("q,x", r"unknown name\(s\) x; .*qkv, proj, fc1, fc2, attn, mlp, all, q, k, v$"),
        ("qv", r"unknown name\(s\) qv; .*q, k, v$"),
        ("qkv,q", r"cannot combine q with qkv: q, k and v adapt the parts of qkv separately"),
        ("v,attn", r"cannot combine v with attn: .*qkv, attn and all adapt the fused qkv"),
        ("all,q,v", r"cannot combine q, v with all"),
    ],
)
def test_bad_targets_name_the_valid_values(targets: str, match: str) -> None:
    assert LINEAR_TARGETS["qkv"] == (QKV_PATH,)  # how a fused-qkv name is recognised
    model = tiny_vit(C)
    with pytest.raises(ValueError, match=match):
        lora(model, targets=targets)
    assert type(model.blocks[0].attn.qkv) is nn.Linear  # refused before the model changed


def test_q_v_with_other_linears_and_k() -> None:
    model = lora(tiny_vit(C), targets="q,k,v,proj")
    wrapped = {n for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)}
    assert wrapped == {f"blocks.{b}.attn.{s}" for b in range(2)
                       for s in ("qkv.q", "qkv.k", "qkv.v", "proj")}  # fmt: skip


def qv_cell() -> CellConfig:
    spec = methods.get_method("lora")
    return CellConfig(method="lora", dataset="demo", seed=0, backbone="test_vit",
                      pretrained=False, weights=None, weights_sha256=None, epochs=1,
                      batch_size=2, img_size=32, device="cpu", precision="fp32",
                      optimizer="adamw", lr=1e-3, weight_decay=0.0, warmup_epochs=0.0,
                      grad_clip=0.0, hparams={**spec.hparams, "targets": "q,v"})  # fmt: skip


def test_a_rebuild_has_the_same_names_and_loads_strictly() -> None:
    """bench.export rebuilds a run by applying the method to a fresh backbone: the split
    happens again, so the saved state dict and trainable tensors line up name for name."""
    source = resolve_backbone("test_vit", pretrained=False, weights=None)
    torch.manual_seed(0)
    first = build_model(qv_cell(), source, C)[0]
    torch.manual_seed(1)
    again = build_model(qv_cell(), source, C)[0]
    again.load_state_dict(first.state_dict(), strict=True)
    assert trainable(again).keys() == trainable(first).keys()


def test_the_q_v_adapter_loads_with_peft_onto_a_split_backbone(tmp_path: Path) -> None:
    source = resolve_backbone("test_vit", pretrained=False, weights=None)
    cell = qv_cell()
    torch.manual_seed(0)
    model = build_model(cell, source, C)[0]
    with torch.no_grad():  # as if trained
        for p in trainable(model).values():
            p.add_(0.01 * torch.randn_like(p))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.eval()(x)
    save_adapter(trained(model, cell, source, C), tmp_path / "adapter")
    torch.manual_seed(0)  # the same random init the trained model's frozen part has
    base = split_qkv(create_backbone(source, num_classes=C, img_size=32))
    loaded = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, atol=1e-5, rtol=1e-5)
