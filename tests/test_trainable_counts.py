"""Every registered method's trainable-parameter count on ViT-B/16 (timm `vit_base_patch16_224`,
224 px, a 7-class head as for ISIC 2018: 768·7 + 7 = 5,383 head parameters), at its defaults.

One table for the whole registry: a new method without an entry fails
`test_every_registered_method_has_a_pinned_count`. Counts with other hyperparameters (ranks,
targets, prompt lengths, FPT+ at 512 px) are pinned beside each method's own tests.
"""

from __future__ import annotations

import pytest
import timm
from torch import nn

import methods
from tests.conftest import skip_if_unavailable

HEAD = 768 * 7 + 7
D, DEPTH = 768, 12

# name -> trainable parameters at the defaults, with where the number comes from
VIT_B16_DEFAULTS: dict[str, int] = {
    "full": 85_804_039,  # every parameter: 85,798,656 backbone + head
    "linear": HEAD,
    "knn": 0,  # trains nothing: its training split is its memory
    "vpt": 97_543,  # deep, 10 prompts: 12·10·768 + 5,383
    "vpt-shallow": 13_063,  # 10 prompts at the input: 10·768 + 5,383
    "vfpt": 97_543,  # VPT-deep's prompts (half of them Fourier-transformed) + 5,383
    "vp": 75_223,  # 30 px pad: 2·3·30·224 + 2·3·30·164 + 5,383
    "lora": 300_295,  # 12·8·(768 + 2304) + 5,383
    "ept": 241_783,  # deep, d_p = 100: 12·197·100 + 5,383
    "fpt-plus": 896_551,  # side network, fusion and prompts at the 224 px rule; computed here
    "fpt-v1": 1_602_535,  # FPT v1's side network and fusion; as in test_fpt at 512 px
    "adapter": 1_195_015,  # AdaptFormer, bottleneck 64
    "bitfit": 108_295,  # every bias + head
    "ssf": 211_207,  # scale and shift after each op + head
    "partial": 7_094_791,  # blocks.11 (7,087,872) + final norm (1,536) + head
    "mlp-head": 1_186_567,  # 2 x Linear(768, 768) + head
    # peft tuners, on the 12 fused qkv Linears (768 -> 2304) unless noted
    "dora": 327_943,  # LoRA r=8 + 12·2304 magnitudes
    "loha": 595_207,  # 12·2·8·(768 + 2304) + 5,383: two rank-8 pairs
    "lokr": 26_887,  # 12·(48·24 + 48·8 + 8·32) + 5,383: W1 48x24 dense ⊗ (48x8)(8x32)
    "ia3": 69_895,  # 12·(2304 + 3072) + 5,383: qkv outputs and fc2 inputs
    "vera": 36_103,  # 12·(256 + 2304) + 5,383: d (r) and b (d_out); A, B frozen
    "fourierft": 17_383,  # 12·1000 + 5,383
    "boft": 69_895,  # 12·(192 blocks·4·4 + 2304 scales) + 5,383
    "oft": 148_231,  # 12·(768/32)·32·31/2 + 5,383 (skew-symmetric 32x32 blocks)
    "hra": 79_111,  # 12·8·768 + 5,383
    "ln_tuning": 43_783,  # (12·2 + 1)·2·768 + 5,383
    "randlora": 235_783,  # 12·(32·24 + 24·768) + 5,383: Λ (r x n) and Γ (n x 768), n = 768/32
    "shira": 300_295,  # 12·8·(768 + 2304) + 5,383: LoRA r=8's budget as sparse entries
    "c3a": 33_031,  # 12·(2304/768)·(768/768)·768 + 5,383: block size gcd(768, 2304) = 768
    "road": 33_031,  # 12·(1152 θ + 1152 α) + 5,383 (road_1: one pair of scalars per 2 outputs)
    "miss": 226_567,  # 12·8·2304 + 5,383
    "delora": 300_307,  # LoRA r=8 + 12 λ
    "waveft": 36_487,  # 12·2592 + 5,383
}


@pytest.fixture(scope="module")
def vit_b16() -> nn.Module:
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=7)
    return model.requires_grad_(False)


def test_every_registered_method_has_a_pinned_count() -> None:
    assert sorted(VIT_B16_DEFAULTS) == sorted(methods.list_methods(include_unavailable=True))


@pytest.mark.parametrize("name", sorted(VIT_B16_DEFAULTS))
def test_default_count_on_vit_b16(vit_b16: nn.Module, name: str) -> None:
    import copy

    skip_if_unavailable(name)
    spec = methods.get_method(name)
    model = spec.build(copy.deepcopy(vit_b16), **spec.hparams)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == VIT_B16_DEFAULTS[name]


def test_counts_match_hand_formulas() -> None:
    lora = DEPTH * 8 * (D + 3 * D) + HEAD
    assert VIT_B16_DEFAULTS["lora"] == lora == VIT_B16_DEFAULTS["shira"]
    assert VIT_B16_DEFAULTS["dora"] == lora + DEPTH * 3 * D
    assert VIT_B16_DEFAULTS["loha"] == DEPTH * 2 * 8 * (D + 3 * D) + HEAD
    assert VIT_B16_DEFAULTS["delora"] == lora + DEPTH
    assert VIT_B16_DEFAULTS["ia3"] == DEPTH * (3 * D + 4 * D) + HEAD
    assert VIT_B16_DEFAULTS["vera"] == DEPTH * (256 + 3 * D) + HEAD
    assert VIT_B16_DEFAULTS["vpt"] == DEPTH * 10 * D + HEAD
    assert VIT_B16_DEFAULTS["ept"] == DEPTH * 197 * 100 + HEAD
    assert VIT_B16_DEFAULTS["vp"] == 2 * 3 * 30 * 224 + 2 * 3 * 30 * (224 - 60) + HEAD
