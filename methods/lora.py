"""LoRA: frozen Linear layers plus trainable low-rank updates (α/r)·B·A, injected with HF peft (Hu et al., ICLR 2022, https://arxiv.org/abs/2106.09685)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from peft import LoraConfig, PeftConfig, inject_adapter_in_model
from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
from torch import nn

from methods.registry import SearchSpace, lr_around, register

# Module-name patterns of a timm VisionTransformer, for peft's `target_modules`. A *string*
# target is full-matched (re.fullmatch) against every module name, so anchoring each pattern at
# `blocks.<i>.` keeps `patch_embed.proj` (a Conv2d) out: a plain name list ["qkv", "proj"]
# would suffix-match it and give it a conv-LoRA too (peft suffix-matches the names of a list).
_BLOCK = r"blocks\.\d+\."
LINEAR_TARGETS: Mapping[str, tuple[str, ...]] = {
    "qkv": (_BLOCK + r"attn\.qkv",),
    "proj": (_BLOCK + r"attn\.proj",),
    "fc1": (_BLOCK + r"mlp\.fc1",),
    "fc2": (_BLOCK + r"mlp\.fc2",),
    "attn": (_BLOCK + r"attn\.qkv", _BLOCK + r"attn\.proj"),
    "mlp": (_BLOCK + r"mlp\.fc1", _BLOCK + r"mlp\.fc2"),
    "all": (
        _BLOCK + r"attn\.qkv",
        _BLOCK + r"attn\.proj",
        _BLOCK + r"mlp\.fc1",
        _BLOCK + r"mlp\.fc2",
    ),
}


def target_regex(targets: str, vocabulary: Mapping[str, tuple[str, ...]] = LINEAR_TARGETS) -> str:
    """Turn a comma-separated target list ("qkv,proj") into one regex for peft's full match.

    "qkv,proj" gives the spec's R1, "qkv,proj,fc1,fc2" (= "all") R2 and "mlp" R3: the same
    module sets, written as one alternation of anchored block paths.
    """
    names = [t.strip() for t in str(targets).split(",") if t.strip()]
    if not names:
        raise ValueError(f"targets is empty; choose from {', '.join(vocabulary)}")
    unknown = [t for t in names if t not in vocabulary]
    if unknown:
        raise ValueError(
            f"unknown target(s) {', '.join(unknown)}; choose comma-separated names from "
            f"{', '.join(vocabulary)}"
        )
    patterns = list(dict.fromkeys(p for t in names for p in vocabulary[t]))  # ordered, no repeats
    return "(?:" + "|".join(patterns) + ")"


def inject_peft(
    model: nn.Module,
    config_cls: type[PeftConfig],
    *,
    targets: str,
    vocabulary: Mapping[str, tuple[str, ...]] = LINEAR_TARGETS,
    **config: Any,
) -> nn.Module:
    """Inject a peft tuner into the frozen ViT's targeted modules in place; then train the head too.

    peft leaves only adapter tensors trainable (everything else is already frozen on entry), so the
    head, which methods train by default, is switched back on afterwards. Returns the same model.
    """
    if not hasattr(model, "get_classifier"):
        raise TypeError("peft methods expect a timm VisionTransformer (with get_classifier())")
    peft_config = config_cls(target_modules=target_regex(targets, vocabulary), **config)
    tuner_cls = PEFT_TYPE_TO_TUNER_MAPPING[peft_config.peft_type]
    if tuner_cls.uses_shared_state:
        # VeRA-style tuners keep projections shared by all layers; inject_adapter_in_model refuses
        # them only because a *second* adapter or save/load needs the tuner object. Each wrapped
        # layer holds a reference to the shared buffers as a submodule, so for one adapter the
        # tuner's own constructor (what inject_adapter_in_model calls) gives a working model.
        model = tuner_cls(model, peft_config, adapter_name="default").model
    else:
        model = inject_adapter_in_model(peft_config, model)
    if any(name.startswith("patch_embed.proj.") for name, _ in model.named_modules()):
        raise RuntimeError("peft wrapped patch_embed.proj; the target regex must exclude it")
    model.get_classifier().requires_grad_(True)
    return model


@register(
    "lora",
    optimizer="adamw",
    lr=1e-3,
    search=SearchSpace(
        lr=lr_around(1e-3),
        hparams={"rank": (1, 4, 8, 32, 64)},
        source="rank: EPT's LoRA grid {1, 4, 8, 32, 64}; lr: suite",
    ),
    weight_decay=0.0,
    summary="LoRA (peft): rank-r updates (α/r)·B·A on the blocks' fused qkv, plus the head",
    paper="https://arxiv.org/abs/2106.09685",
)
def build(
    model: nn.Module,
    *,
    rank: int = 8,
    alpha: float = 8.0,
    dropout: float = 0.0,
    targets: str = "qkv",
) -> nn.Module:
    """LoRA on the fused qkv by default: Q, K and V share one down-projection A (section 4)."""
    if int(rank) != rank or rank < 1:
        raise ValueError(f"lora rank must be a positive integer, got {rank}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"lora alpha must be a positive number, got {alpha}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"lora dropout must be in [0, 1), got {dropout}")
    return inject_peft(
        model,
        LoraConfig,
        targets=targets,
        r=int(rank),
        lora_alpha=alpha,
        lora_dropout=dropout,
        bias="none",
    )
