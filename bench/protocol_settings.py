"""Every setting of a paper protocol beside `bench run`'s own default, with its source: what
`bench run --protocol NAME --dry-run` prints and the tests check against the papers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.grid.request import GridRequest, method_settings
from bench.protocols import TRAINING_KEYS, Protocol, apply_protocol

# `bench run`'s defaults for the settings a protocol fixes beside its training recipe.
RUN_DEFAULTS: dict[str, str] = {
    "backbone": "demo-vit",
    "img_size": "the backbone's (FPT: its own rule)",
    "epochs": "the dataset card's",
    "batch_size": str(GridRequest.batch_size),
    "augment": GridRequest.augment,
    "precision": "auto: bf16 on GPUs of compute capability 8.0+, fp16 below, fp32 on CPU/MPS",
}


@dataclass(frozen=True)
class SettingRow:
    setting: str
    protocol: str  # the paper's value as the protocol runs it
    suite: str  # `bench run`'s default
    source: str

    @property
    def differs(self) -> bool:
        return self.protocol != self.suite


def settings_rows(protocol: Protocol) -> list[SettingRow]:
    """One row per setting: the grid's budget, precision, each training setting (grouped by
    method where methods differ) and each hyperparameter the protocol pins."""
    suite_req = GridRequest(
        methods=list(protocol.methods), datasets=list(protocol.datasets), seeds=[0],
        backbone=protocol.backbone, batch_size=protocol.batch_size,
    )  # fmt: skip
    paper_req = apply_protocol(protocol, suite_req)
    suite = {m: method_settings(m, suite_req) for m in protocol.methods}
    paper = {m: method_settings(m, paper_req) for m in protocol.methods}
    src = protocol.sources
    rows = [
        SettingRow(key, _text(getattr(protocol, key)) if getattr(protocol, key) else "native",
                   RUN_DEFAULTS[key], src.get(key, ""))
        for key in ("backbone", "img_size", "epochs", "batch_size", "augment")
    ]  # fmt: skip
    rows.append(
        SettingRow(
            "precision", protocol.precision, RUN_DEFAULTS["precision"], src.get("precision", "")
        )
    )
    for key in TRAINING_KEYS:
        values = {m: paper[m][0][key] for m in protocol.methods}
        if key == "lr":
            values.update(dict.fromkeys(protocol.dataset_lr_methods, "per dataset"))
        rows.append(
            SettingRow(
                key,
                _grouped(values),
                _grouped({m: suite[m][0][key] for m in protocol.methods}),
                _sources(src, key, protocol.methods),
            )
        )
    for method, pinned in protocol.hparams.items():
        for key in pinned:
            rows.append(
                SettingRow(
                    f"{method}.{key}",
                    _text(paper[method][1][key]),
                    _text(suite[method][1][key]),
                    src.get(f"{method}.{key}", ""),
                )
            )
    return rows


def _sources(src: dict[str, str], key: str, methods: tuple[str, ...]) -> str:
    """The protocol's source for a setting: for every method, then per method."""
    parts = [src[key]] if key in src else []
    parts += [f"{m}: {src[f'{m}.{key}']}" for m in methods if f"{m}.{key}" in src]
    return "; ".join(parts) or "the suite's default (the sources give none)"


def _grouped(values: dict[str, Any]) -> str:
    """One value when every method has it, else "value (methods); value (methods)"."""
    by_value: dict[str, list[str]] = {}
    for method, value in values.items():
        by_value.setdefault(_text(value), []).append(method)
    if len(by_value) == 1:
        return next(iter(by_value))
    return "; ".join(f"{v} ({', '.join(ms)})" for v, ms in by_value.items())


def _text(value: Any) -> str:
    if value is None:
        return "as built (0)"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
