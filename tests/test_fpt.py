"""FPT+ and FPT (methods/fpt.py): exact counts, shapes, the tap and fusion against references
written from the FPT+ paper's equations, gradients, the frozen-feature protocol, validation and size rules."""

from __future__ import annotations

import copy
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Attention
from torch import nn

from bench.measure import count_params
from bench.train import set_train_mode
from methods import get_method
from methods.fpt import FineGrainedPromptTuning, KVTap, lpm_input_size
from tests.conftest import tiny_vit

# Tiny LPM: 32 px, patch 8 -> 16 patches + CLS = 17 tokens; width 48, 3 heads of 16.
TINY = dict(num_classes=5, patch_size=8, embed_dim=48, depth=3, num_heads=3)


def tiny_lpm(**kwargs) -> nn.Module:
    """A frozen tiny ViT whose attention is peaked, so top-k selection has clear winners."""
    model = tiny_vit(**{**TINY, **kwargs})
    with torch.no_grad():
        # timm's init (std 0.02) gives near-uniform attention, i.e. near-tied importance scores.
        for blk in model.blocks:
            blk.attn.qkv.weight.normal_(0.0, 0.3)
    return model


def build(name: str, model: nn.Module, **hparams) -> FineGrainedPromptTuning:
    return get_method(name).build(model, **hparams)


def trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------- references from the spec
def reference_kv(
    attn: nn.Module, x: torch.Tensor, ratio: float, importance: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full per-head k, v [B,H,N,hd] and the kept token indices [B,H,keep], sorted by index."""
    B, N, C = x.shape
    H = attn.num_heads
    hd = C // H
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias)
    q, k, v = (t.reshape(B, N, H, hd).transpose(1, 2) for t in qkv.split(C, dim=-1))
    probs = torch.softmax(q @ k.transpose(-2, -1) * hd**-0.5, dim=-1)  # [B,H,Nq,Nk]
    score = probs.mean(dim=2) if importance == "global" else probs[:, :, 0, :]
    keep = int(N * ratio)
    if keep < N:
        # A near-tie at the cut would make the kept set depend on rounding, not on the rule.
        top = score.sort(dim=-1, descending=True).values
        assert (top[..., keep - 1] - top[..., keep]).min() > 1e-6, "test input has a near-tie"
    idx = score.topk(keep, dim=-1).indices.sort(dim=-1).values
    return k, v, idx


def assert_kept(
    kept_k: torch.Tensor,
    kept_v: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    idx: torch.Tensor,
) -> None:
    """The kept keys/values are, per head, exactly the reference tokens (compared as sets)."""
    assert kept_k.shape == kept_v.shape == (*idx.shape, k.shape[-1])
    # Recover which token each kept key is, then put both sides in token order.
    dist = torch.cdist(kept_k, k)  # [B,H,keep,N]
    assert dist.min(dim=-1).values.max() < 1e-4, "a kept key is not one of the tokens' keys"
    found, order = dist.argmin(dim=-1).sort(dim=-1)
    assert torch.equal(found, idx)
    gather = idx[..., None].expand(-1, -1, -1, k.shape[-1])
    sort = order[..., None].expand(-1, -1, -1, k.shape[-1])
    torch.testing.assert_close(kept_k.gather(2, sort), k.gather(2, gather), atol=1e-5, rtol=0)
    torch.testing.assert_close(kept_v.gather(2, sort), v.gather(2, gather), atol=1e-5, rtol=0)


def reference_fusion(
    fusion: nn.Module, k: torch.Tensor, v: torch.Tensor, plus: bool
) -> torch.Tensor:
    """FPT+ step 3 (fine-grained prompts cross-attend to the frozen keys and values), one image/layer/head at a time, eval mode (dropout = identity)."""
    B, L, H, _, hd = k.shape
    out = torch.empty(B, L, fusion.prompts.shape[1], fusion.out_proj.out_features)
    for b in range(B):
        for layer in range(L):
            p = fusion.prompts[layer]  # [P, prompt_dim]
            if plus:  # FPT+: query = LN(P)
                q = F.layer_norm(
                    p, p.shape[-1:], fusion.norm.weight, fusion.norm.bias, fusion.norm.eps
                )
            else:  # FPT: query = Linear(P) up to the LPM width
                q = F.linear(p, fusion.proj.weight, fusion.proj.bias)
            heads = []
            for h in range(H):
                qh = q[:, h * hd : (h + 1) * hd]
                a = torch.softmax(qh @ k[b, layer, h].T / math.sqrt(hd), dim=-1)
                heads.append(a @ v[b, layer, h])
            ctx = torch.cat(heads, dim=-1)
            w, bias = fusion.out_proj.weight, fusion.out_proj.bias
            out[b, layer] = F.linear(ctx + p, w, bias) if plus else F.linear(ctx, w, bias) + p
    return out


# ---------------------------------------------------------------- ViT-B at 512 (paper setting)
@pytest.fixture(scope="module")
def vitb_plus() -> FineGrainedPromptTuning:
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=7, img_size=512)
    model.requires_grad_(False)
    return build("fpt", model)


def test_exact_counts_fpt_plus_vit_b(vitb_plus: FineGrainedPromptTuning) -> None:
    m = vitb_plus
    assert m.settings["variant"] == "fpt-plus"
    assert count_params(m, trainable_only=True) == 901_159
    assert count_params(m.side, trainable_only=True) == 752_071
    assert count_params(m.fusion, trainable_only=True) == 149_088
    f = m.fusion
    assert f.prompts.numel() == 73_728
    assert count_params(f.norm) == 1_536
    assert count_params(f.out_proj) == 73_824
    assert count_params(m.side.head) == 679
    # Every trainable tensor is in fusion or side; the LPM (incl. its task head) is frozen.
    assert count_params(m.fusion) + count_params(m.side) == 901_159


def test_exact_counts_fpt_v1_vit_b() -> None:
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=7, img_size=512)
    model.requires_grad_(False)
    m = build("fpt-v1", model)
    assert count_params(m, trainable_only=True) == 1_602_535
    s = m.settings
    assert (s["side_size"], s["side_width"], s["prompt_dim"]) == (224, 96, 96)
    assert s["layer_ids"] == list(range(12)) and len(m.side.blocks) == 12


def test_paper_percentage_on_vit_b_384() -> None:
    model = timm.create_model("vit_base_patch16_384", pretrained=False, num_classes=7, img_size=512)
    model.requires_grad_(False)
    m = build("fpt-plus", model)
    # The reference's denominator: LPM at its pretrained 384 px with a 1000-class head.
    assert m.settings["paper_lpm_params"] == 86_859_496
    assert round(m.paper_trainable_pct(901_159), 3) == 1.027
    assert round(m.paper_trainable_pct(1_602_535), 2) == 1.81


def test_shapes_vit_b_512(vitb_plus: FineGrainedPromptTuning) -> None:
    m = vitb_plus.eval()
    s = m.settings
    assert (s["lpm_size"], s["side_size"], s["layer_ids"]) == (512, 128, [6, 7, 8, 9, 10, 11])
    assert (s["lpm_tokens"], s["keep_tokens"], s["side_tokens"]) == (1025, 205, 65)
    assert m.feature_shapes() == {"k": (6, 12, 205, 64), "v": (6, 12, 205, 64)}
    seen: dict[str, tuple[int, ...]] = {}

    def pre(name: str):
        return lambda _mod, args: seen.__setitem__(name, tuple(args[0].shape))

    handles = [
        m.lpm.blocks[6].attn.register_forward_pre_hook(pre("tap_in")),
        m.side.blocks[0].register_forward_pre_hook(pre("side0_in")),
        m.side.blocks[0].register_forward_hook(
            lambda _m, _a, out: seen.__setitem__("side0_out", tuple(out.shape))
        ),
        m.side.blocks[1].register_forward_pre_hook(pre("side1_in")),
        m.side.norm.register_forward_pre_hook(pre("norm_in")),
    ]
    try:
        x = torch.randn(1, 3, 512, 512)
        with torch.no_grad():
            feats = m.frozen_features(x)
            logits = m.forward_with(x, feats)
    finally:
        for h in handles:
            h.remove()
    assert feats["k"].shape == feats["v"].shape == (1, 6, 12, 205, 64)
    assert seen["tap_in"] == (1, 1025, 768)
    # 64 patches + CLS, plus 16 prompts appended in the block and dropped after it.
    assert seen["side0_in"] == seen["side0_out"] == seen["side1_in"] == (1, 81, 96)
    assert seen["norm_in"] == (1, 65, 96)
    assert logits.shape == (1, 7)


# ---------------------------------------------------------------- KVTap
@pytest.mark.parametrize("importance", ["global", "cls"])
@pytest.mark.parametrize("ratio", [0.15, 0.2, 0.5, 1.0])  # 0.15: int(2.55) = 2
def test_kvtap_matches_attention_and_reference(importance: str, ratio: float) -> None:
    torch.manual_seed(0)
    attn = Attention(48, num_heads=3, qkv_bias=True).eval()
    with torch.no_grad():
        attn.qkv.weight.normal_(0.0, 0.3)
    assert attn.fused_attn  # the comparison is against timm's fused SDPA path
    x = torch.randn(2, 17, 48)
    with torch.no_grad():
        expected = attn(x)
        tap = KVTap(attn, token_ratio=ratio, importance=importance)
        out = tap(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    k, v, idx = reference_kv(attn, x, ratio, importance)
    assert idx.shape[-1] == int(17 * ratio)
    assert_kept(*tap.kv, k, v, idx)


def test_kvtap_rejects_masks() -> None:
    tap = KVTap(Attention(48, num_heads=3), token_ratio=0.2, importance="global")
    with pytest.raises(ValueError, match="mask"):
        tap(torch.randn(1, 5, 48), attn_mask=torch.zeros(5, 5))


def test_tapped_lpm_output_unchanged() -> None:
    torch.manual_seed(0)
    lpm = tiny_lpm().eval()
    original = copy.deepcopy(lpm)
    m = build("fpt", lpm).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m.lpm(x), original(x), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- layers and alignment
@pytest.mark.parametrize(("layers", "ids"), [(6, [0, 1, 2]), (2, [1, 2]), (1, [2])])
def test_layers_pick_the_last_blocks(layers: int, ids: list[int]) -> None:
    torch.manual_seed(0)
    lpm = tiny_lpm()
    original = copy.deepcopy(lpm).eval()
    m = build("fpt", lpm, layers=layers).eval()
    assert m.settings["layer_ids"] == ids and m.settings["layers"] == len(ids)
    assert [i for i, b in enumerate(m.lpm.blocks) if isinstance(b.attn, KVTap)] == ids
    assert len(m.side.blocks) == len(ids)
    assert m.fusion.prompts.shape[0] == len(ids)
    # Feature j must come from LPM block ids[j]: compare with the reference on that block's input.
    inputs: dict[int, torch.Tensor] = {}
    for i, blk in enumerate(original.blocks):
        blk.norm1.register_forward_hook(lambda _m, _a, out, i=i: inputs.__setitem__(i, out))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        original.forward_features(x)
        feats = m.frozen_features(x)
    assert feats["k"].shape == (2, len(ids), 3, 3, 16)  # keep = int(17 * 0.2) = 3
    for j, i in enumerate(ids):
        k, v, idx = reference_kv(original.blocks[i].attn, inputs[i], 0.2, "global")
        assert_kept(feats["k"][:, j], feats["v"][:, j], k, v, idx)
    # The taps hand their tensors over and keep no reference to them.
    assert all(b.attn.kv is None for b in m.lpm.blocks if isinstance(b.attn, KVTap))


# ---------------------------------------------------------------- fusion
@pytest.mark.parametrize("name", ["fpt-plus", "fpt-v1"])
def test_fusion_matches_reference(name: str) -> None:
    torch.manual_seed(0)
    m = build(name, tiny_lpm())
    f = m.fusion
    with torch.no_grad():
        # Defaults (prompts ~ 1e-6, LN = identity affine) would hide wrong orderings.
        for p in f.parameters():
            p.normal_(0.0, 1.0)
    k, v = torch.randn(2, 2, 3, 3, 5, 16).unbind(0)  # [B=2, L=3, H=3, T=5, hd=16]
    f.eval()
    with torch.no_grad():
        out = f(k, v)
        expected = reference_fusion(f, k, v, plus=name == "fpt-plus")
    assert out.shape == (2, 3, 16, 6)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    if name == "fpt-plus":
        # Train mode: Dropout(0.5) is the last step, after out_proj and the residual.
        f.train()
        with torch.no_grad():
            dropped = f(k, v)
        zero = dropped == 0
        assert zero.any() and not zero.all()
        torch.testing.assert_close(dropped[~zero], 2 * expected[~zero], atol=1e-5, rtol=1e-5)


def reference_side_logits(side: nn.Module, x: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """FPT+ step 4: CLS + patches; per block append F_l, run it, drop the last P."""
    t = side.patch_embed(x)
    t = torch.cat([side.cls_token.expand(len(x), -1, -1), t], dim=1) + side.pos_embed
    for i, blk in enumerate(side.blocks):
        n = t.shape[1]
        t = blk(torch.cat([t, prompts[:, i]], dim=1))[:, :n]
    return side.head(side.norm(t)[:, 0])


@pytest.mark.parametrize("name", ["fpt-plus", "fpt-v1"])
def test_side_network_matches_reference(name: str) -> None:
    torch.manual_seed(0)
    m = build(name, tiny_lpm()).eval()
    x = torch.randn(2, 3, 32, 32)
    k, v = torch.randn(2, 2, 3, 3, 3, 16).unbind(0)
    with torch.no_grad():
        logits = m.forward_with(x, {"k": k, "v": v})
        expected = reference_side_logits(m.side, x, m.fusion(k, v))
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", ["fpt-plus", "fpt-v1"])
def test_gradients_reach_exactly_the_trainable_tensors(name: str) -> None:
    torch.manual_seed(0)
    m = build(name, tiny_lpm())
    names = dict(m.named_parameters())
    fusion_side = {n for n in names if n.startswith(("fusion.", "side."))}
    assert trainable_names(m) == fusion_side
    assert all(n.startswith("lpm.") for n in set(names) - fusion_side)
    query = "norm" if name == "fpt-plus" else "proj"
    assert {n for n in fusion_side if n.startswith("fusion.")} == {
        "fusion.prompts",
        f"fusion.{query}.weight",
        f"fusion.{query}.bias",
        "fusion.out_proj.weight",
        "fusion.out_proj.bias",
    }
    set_train_mode(m)
    logits = m(torch.randn(4, 3, 32, 32))
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    for n, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n
    assert not any(p.requires_grad for p in m.lpm.parameters())


# ---------------------------------------------------------------- frozen-feature protocol
def test_forward_equals_forward_with_features() -> None:
    torch.manual_seed(0)
    # Dropout/drop-path in the LPM make any train-mode leak into the features visible.
    m = build("fpt", tiny_lpm(drop_path_rate=0.3, proj_drop_rate=0.3, attn_drop_rate=0.3))
    x = torch.randn(2, 3, 32, 32)
    m.eval()
    with torch.no_grad():
        feats = m.frozen_features(x)
        torch.testing.assert_close(m(x), m.forward_with(x, feats), atol=1e-6, rtol=0)
    set_train_mode(m)
    assert m.fusion.training and m.side.training and not m.lpm.training
    # Even an input that tracks gradients yields features with no graph behind them.
    train_feats = m.frozen_features(x.clone().requires_grad_())
    assert not train_feats["k"].requires_grad and not train_feats["v"].requires_grad
    torch.testing.assert_close(train_feats, feats, atol=0, rtol=0)


def test_features_resize_to_the_lpm_size() -> None:
    torch.manual_seed(0)
    m = build("fpt", tiny_lpm()).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = m.frozen_features(x)
        small = m.frozen_features(F.interpolate(x, size=32, mode="bilinear", antialias=True))
    torch.testing.assert_close(feats, small, atol=1e-6, rtol=0)


def test_release_frozen_keeps_cached_path() -> None:
    torch.manual_seed(0)
    m = build("fpt", tiny_lpm()).eval()
    trainable = count_params(m, trainable_only=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = m.frozen_features(x)
        before = m.forward_with(x, feats)
        m.release_frozen()
        after = m.forward_with(x, feats)
        half = m.forward_with(x, {k: t.half() for k, t in feats.items()})  # cache_dtype float16
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    torch.testing.assert_close(half, before, atol=1e-3, rtol=1e-2)
    # Nothing of the LPM is held any more; the trainable part is intact.
    assert count_params(m) == count_params(m, trainable_only=True) == trainable
    with pytest.raises(RuntimeError, match="released"):
        m.frozen_features(x)
    with pytest.raises(RuntimeError, match="released"):
        m(x)


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("name", "hparams", "match"),
    [
        ("fpt", {"importance": "foo"}, "importance"),
        ("fpt", {"token_ratio": 0}, "token_ratio"),
        ("fpt", {"token_ratio": 1.5}, "token_ratio"),
        ("fpt", {"cache_dtype": "int8"}, "cache_dtype"),
        ("fpt", {"side_size": 36}, "a multiple of the backbone.s patch size"),
        ("fpt", {"side_reduction": 5}, "divides the backbone's head width 16"),  # 48 / 5
        ("fpt", {"side_reduction": 12}, "head width 16, got 12"),  # width 4 for 3 heads
        ("fpt", {"side_reduction": 3}, "head width 16, got 3"),  # width 16 for 3 heads
        ("fpt", {"layers": 0}, ">= 1"),
        ("fpt", {"dropout": 1.0}, "dropout"),
        ("fpt", {"lpm_size": 64}, "lpm_size"),  # the backbone was built for 32 px
        ("fpt-v1", {"prompt_reduction": 5}, r"1 or equal to side_reduction \(8\), got 5"),
        # the side reduction given with it is the one compared
        ("fpt-v1", {"side_reduction": 4, "prompt_reduction": 8}, r"side_reduction \(4\), got 8"),
    ],
)
def test_bad_hyperparameters(name: str, hparams: dict, match: str) -> None:
    lpm = tiny_lpm()
    with pytest.raises(ValueError, match=match):
        build(name, lpm, **hparams)
    # A rejected build leaves the backbone untouched.
    assert not any(isinstance(mod, KVTap) for mod in lpm.modules())


# ---------------------------------------------------------------- resolution rules
@pytest.mark.parametrize(
    ("native", "patch", "data", "hparams", "expected"),
    [
        (224, 16, None, {}, 512),  # ViT-B/16: 32 patches a side, the paper's 512
        (224, 16, 224, {}, 224),  # capped at the stored image size
        (224, 16, 128, {}, 224),  # never below the backbone's native size
        (224, 16, 500, {}, 496),  # rounded down to the patch
        (64, 8, 64, {}, 64),  # demo-like
        (224, 16, None, {"lpm_size": 384}, 384),  # the hyperparameter wins
        (224, 16, 224, {"lpm_size": 448}, 448),
    ],
)
def test_lpm_input_size(
    native: int, patch: int, data: int | None, hparams: dict, expected: int
) -> None:
    assert lpm_input_size(native, patch, data, hparams) == expected


def test_size_rule_is_registered() -> None:
    assert get_method("fpt") is get_method("fpt-plus")
    assert get_method("fpt").input_size is lpm_input_size
    assert get_method("fpt-v1").input_size is lpm_input_size


@pytest.mark.parametrize(
    ("img", "patch", "side"),
    [(224, 16, 64), (64, 8, 32), (32, 8, 32), (512, 16, 128)],
)
def test_fpt_plus_side_size(img: int, patch: int, side: int) -> None:
    # Side = a quarter of the LPM size, rounded to the patch, at least 4 patches a side.
    lpm = tiny_vit(img_size=img, patch_size=patch, embed_dim=48, depth=1, num_heads=3)
    m = build("fpt", lpm)
    assert m.settings["side_size"] == m.side.patch_embed.img_size[0] == side
    assert m.settings["side_tokens"] == (side // patch) ** 2 + 1


def test_side_size_hparam_wins() -> None:
    m = build("fpt", tiny_lpm(), side_size=48)
    assert m.settings["side_size"] == 48
    with torch.no_grad():
        assert m.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 5)
