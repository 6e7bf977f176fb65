"""Checks and injections particular to some peft tuners, each referenced from its tuner's row in `methods/peft_tuners.py`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

from torch import nn

from bench.hparam_limits import Names
from methods.peft_inject import (
    LINEAR_TARGETS,
    inject_peft,
    target_regex,
    targeted_linears,
)
from methods.qkv_split import QKV_PATH, SPLIT_TARGETS, split_qkv

# LoRA's vocabulary: the shared Linear names, plus q, k and v, the fused qkv's three parts as
# independent layers (the LoRA paper's W_q and W_v: `targets="q,v"`).
LORA_TARGETS = {**LINEAR_TARGETS, **SPLIT_TARGETS}
_FUSED = tuple(t for t, paths in LORA_TARGETS.items() if QKV_PATH in paths)  # qkv, attn, all
# Split and fused qkv cannot mix: the fused layer no longer exists once split, and adapting it
# too would be a third form.
LORA_TARGET_NAMES = Names(
    tuple(LORA_TARGETS),
    apart=(tuple(SPLIT_TARGETS), _FUSED),
    why="q, k and v adapt the parts of qkv separately; qkv, attn and all adapt the fused qkv",
)


def ia3_feedforward(name: str, model: nn.Module, values: dict[str, Any]) -> dict[str, Any]:
    """peft scales the INPUT of the `feedforward` layers; each must be one of the targets."""
    feedforward = values["feedforward"]
    names = {t.strip() for t in feedforward.split(",") if t.strip()}
    chosen = {t.strip() for t in values["targets"].split(",") if t.strip()}
    expanded = {p for t in chosen if t in LINEAR_TARGETS for p in LINEAR_TARGETS[t]}
    for ff in names:
        if ff not in LINEAR_TARGETS or not set(LINEAR_TARGETS[ff]) <= expanded:
            raise ValueError(
                f"{name} feedforward {ff!r} must be one of the targets ({values['targets']!r}); "
                f"names: {', '.join(LINEAR_TARGETS)}"
            )
    # A list (not a regex) of no names when nothing is feed-forward: peft would otherwise look
    # the model type up in its transformers table and fail on a timm model.
    return {"feedforward_modules": target_regex(feedforward) if names else []}


def spectrum_fits(name: str, model: nn.Module, values: dict[str, Any]) -> dict[str, Any]:
    """FourierFT/WaveFT: n trainable coefficients cannot exceed a targeted weight's entries."""
    n = values["n_frequency"]
    for layer in targeted_linears(model, values["targets"]):
        if n > layer.in_features * layer.out_features:
            raise ValueError(
                f"{name} n_frequency={n} exceeds a targeted layer's {layer.out_features}x"
                f"{layer.in_features} weight; lower it"
            )
    return {}


def shira_fits(name: str, model: nn.Module, values: dict[str, Any]) -> dict[str, Any]:
    r = values["rank"]
    for layer in targeted_linears(model, values["targets"]):
        if r * (layer.in_features + layer.out_features) > layer.in_features * layer.out_features:
            raise ValueError(
                f"{name} rank {r} asks for more entries than a {layer.out_features}x"
                f"{layer.in_features} weight has; lower it"
            )
    return {}


def miss_fits(name: str, model: nn.Module, values: dict[str, Any]) -> dict[str, Any]:
    r = values["rank"]
    for layer in targeted_linears(model, values["targets"]):
        if r > layer.in_features:
            raise ValueError(
                f"{name} rank {r} exceeds a targeted layer's in_features {layer.in_features}"
            )
    return {}


def c3a_auto_block(name: str, model: nn.Module, values: dict[str, Any]) -> dict[str, Any]:
    """block_size 0: the greatest common divisor of the targeted layers' sizes."""
    layers = targeted_linears(model, values["targets"])
    sizes = [d for layer in layers for d in (layer.in_features, layer.out_features)]
    b = values["block_size"] or (math.gcd(*sizes) if sizes else 1)
    bad = sorted({d for d in sizes if d % b})
    if bad:
        raise ValueError(
            f"{name} block_size {b} must divide every targeted layer size; it does not divide {bad}"
        )
    return {"block_size": b}


def inject_boft(model: nn.Module, config_cls: type, **config: Any) -> nn.Module:
    """peft builds butterfly factors > 1 only with its JIT-compiled CUDA extension and otherwise
    silently falls back to 1; a factor it did not build is an error here, so the method (and its
    parameter count) does not depend on the machine."""
    factor = config["boft_n_butterfly_factor"]
    with warnings.catch_warnings():
        if factor == 1:
            # peft tries to JIT-build its CUDA extension and warns when it cannot, also about
            # the factor-1 fallback; with one factor the extension is never used: noise.
            warnings.filterwarnings("ignore", message="Failed to load the CUDA extension")
            warnings.filterwarnings("ignore", message="Setting boft_n_butterfly_factor to 1")
        model = inject_peft(model, config_cls, **config)
    built = {p.shape[0] for n, p in model.named_parameters() if ".boft_R." in n}
    if built != {factor}:
        raise ValueError(
            f"boft butterfly_factor={factor} needs peft's CUDA extension (fbd_cuda), which could "
            f"not be built here; peft fell back to {sorted(built)}. Use butterfly_factor=1."
        )
    return model


def inject_ln_tuning(model: nn.Module, config_cls: type, **config: Any) -> nn.Module:
    with warnings.catch_warnings():
        # peft warns on any module type it does not list; timm's LayerNorm subclasses nn.LayerNorm
        # and LN-tuning only trains a deep copy of it, so the warning is noise here.
        warnings.filterwarnings("ignore", message="Unsupported layer type", category=UserWarning)
        return inject_peft(model, config_cls, **config)


def inject_split_lora(
    model: nn.Module,
    config_cls: type,
    *,
    targets: str,
    vocabulary: Mapping[str, tuple[str, ...]],
    **config: Any,
) -> nn.Module:
    """LoRA whose targets may name q, k or v (`LORA_TARGET_NAMES`, checked by the registry): split
    every block's fused qkv into three Linears first (methods/qkv_split.py), so W_q and W_v get
    independent updates and W_k none (LoRA, Hu et al., ICLR 2022, section 4.2). Targets without
    them inject on the fused qkv as before."""
    names = {t.strip() for t in targets.split(",") if t.strip()}
    if names & set(SPLIT_TARGETS):
        split_qkv(model)
    return inject_peft(model, config_cls, targets=targets, vocabulary=vocabulary, **config)
