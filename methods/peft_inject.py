"""HF peft tuners on a timm ViT: target regexes, injection, and the table row that registers a tuner as a method."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from types import ModuleType
from typing import Any

import peft
from packaging.version import Version
from peft import PeftConfig, inject_adapter_in_model
from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from bench.hparam_limits import Limit, Names
from methods.qkv_split import fuse_qkv
from methods.registry import keyword_builder, register
from methods.search import SearchSpace

# The oldest peft this module and LoRA work with (pyproject's floor): 0.6 has no
# `get_base_layer`, which `merge_peft` needs. A row whose tuner (or the config fields it sets)
# came later says so in `min_peft` and is registered unavailable on an older peft.
PEFT_FLOOR = "0.7.0"
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
    if wrong := Names(tuple(vocabulary)).problem(targets):
        raise ValueError(f"targets {wrong}")
    names = [t.strip() for t in targets.split(",") if t.strip()]
    patterns = list(dict.fromkeys(p for t in names for p in vocabulary[t]))  # ordered, no repeats
    return "(?:" + "|".join(patterns) + ")"


def targeted_linears(model: nn.Module, targets: str) -> list[nn.Linear]:
    """The Linear layers `targets` selects, for checks against their sizes before injecting."""
    regex = target_regex(targets)
    return [
        m for n, m in model.named_modules() if isinstance(m, nn.Linear) and re.fullmatch(regex, n)
    ]


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
    # peft < 0.21 has no such flag: its inject_adapter_in_model is this same constructor call.
    if getattr(tuner_cls, "uses_shared_state", False):
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


def merge_peft(model: nn.Module) -> nn.Module:
    """Fold every peft tuner layer into its base layer and put the base layer in its place: what
    `PeftModel.merge_and_unload()` does, for a model injected without a PeftModel around it.
    A qkv split for LoRA's q/v form is fused back, so the result is a plain timm ViT. Changes
    `model` in place and returns it."""
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    return fuse_qkv(model)


# (tuner name, model, checked hyperparameters) -> config fields to set or override; raises
# ValueError when a value cannot hold on this model's layers.
Prepare = Callable[[str, nn.Module, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Knob:
    """One hyperparameter of a tuner: its default, the peft config field it sets (None: only the
    row's `prepare`, or the injection's `targets`, reads it) and the values it may take (the
    registry checks them before the row builds)."""

    name: str
    default: Any
    config: str | None = None
    limit: Limit | None = None


def targets(default: str = "qkv") -> Knob:
    """The target-module rule: comma-separated names of `LINEAR_TARGETS` (or the row's vocabulary,
    which sets its limit: `PeftTuner.limits`)."""
    return Knob("targets", default)


@dataclass(frozen=True)
class PeftTuner:
    """One peft tuner as a registered method: its config class (by name, looked up in the installed
    peft), its knobs (the builder's keyword-only hyperparameters, in order), the config fields it
    always sets, the training defaults `@register` records, and `min_peft`, the first peft release
    the row works with (older: registered unavailable). `summary` is what `bench list` shows; `notes` (the builder's
    docstring) gives the formula and says why a default differs from peft's."""

    name: str
    config: str
    lr: float
    summary: str
    paper: str
    knobs: tuple[Knob, ...]
    notes: str = ""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    vocabulary: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: LINEAR_TARGETS)
    # the rule for `targets` when it is more than "names of the vocabulary" (LoRA's q, k, v)
    target_names: Names | None = None
    search: SearchSpace | None = None
    prepare: Prepare | None = None
    inject: Callable[..., nn.Module] = inject_peft  # a bespoke one wraps inject_peft
    min_peft: str = PEFT_FLOOR

    @property
    def defaults(self) -> dict[str, Any]:
        return {k.name: k.default for k in self.knobs}

    @property
    def limits(self) -> dict[str, Limit]:
        """Each knob's limit; `targets` names from the row's vocabulary."""
        limits = {k.name: k.limit for k in self.knobs if k.limit is not None}
        if "targets" in self.defaults:
            limits["targets"] = self.target_names or Names(tuple(self.vocabulary))
        return limits

    def build(self, model: nn.Module, *, config_cls: type[PeftConfig], **values: Any) -> nn.Module:
        """Inject the tuner (`config_cls`: the row's config) with hyperparameters the registry
        has checked against `limits`."""
        config = {**self.fixed, **{k.config: values[k.name] for k in self.knobs if k.config}}
        if self.prepare is not None:
            config |= self.prepare(self.name, model, values)
        return self.inject(
            model, config_cls, targets=values["targets"], vocabulary=self.vocabulary, **config
        )


def needs_peft(row: PeftTuner, peft_module: ModuleType = peft) -> str:
    """Why `peft_module` cannot run the row; "" when it can. The version matters, not only the
    class: OFT's config exists long before the parametrisation (and counts) the row relies on."""
    need, have = row.min_peft, peft_module.__version__
    # release numbers only, so a dev build of the needed release (0.18.0.dev0) counts as it
    if hasattr(peft_module, row.config) and Version(have).release >= Version(need).release:
        return ""
    return f"{row.name} needs peft >= {need}; installed {have}: pip install -U 'peft>={need}'"


def register_tuners(rows: tuple[PeftTuner, ...], peft_module: ModuleType = peft) -> None:
    """Register every row as a method whose hyperparameters are the row's knobs; every tuner here
    folds into its base layers for deployment (`merge_peft`, checked per tuner by the tests). A
    row whose config `peft_module` lacks is registered unavailable, saying which peft it needs."""
    for row in rows:
        config_cls = getattr(peft_module, row.config, None)
        build = keyword_builder(row.name, row.defaults, partial(row.build, config_cls=config_cls))
        build.__doc__ = row.notes
        register(
            row.name,
            lr=row.lr,
            search=row.search,
            summary=row.summary,
            paper=row.paper,
            merge=merge_peft,
            unavailable=needs_peft(row, peft_module),
            limits=row.limits,
        )(build)
