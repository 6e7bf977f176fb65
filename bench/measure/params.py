"""Parameter counts of an adapted model: total, trainable, and shares of the backbone."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn


def _unique_params(module: nn.Module) -> Iterator[nn.Parameter]:
    # Dedupe by identity: tied weights appear under several names but are one tensor.
    seen: set[int] = set()
    for p in module.parameters(recurse=True):
        if id(p) not in seen:
            seen.add(id(p))
            yield p


def count_params(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters in ``module``; a shared Parameter is counted once."""
    return sum(p.numel() for p in _unique_params(module) if p.requires_grad or not trainable_only)


def param_report(
    backbone_params: int, head_params: int, model: nn.Module, head: nn.Module | None
) -> dict[str, int | float]:
    """Parameter budget of an adapted model.

    ``backbone_params`` is the frozen backbone's size without the classifier head, counted
    before the PEFT method ran; it is the denominator of both percentages so methods are
    compared against the same base. ``head`` is the classifier module inside ``model`` (or
    None); its trainable parameters are excluded from ``trainable_params_no_head``.
    """
    if backbone_params <= 0:
        raise ValueError(f"backbone_params must be positive, got {backbone_params}")
    trainable = count_params(model, trainable_only=True)
    trainable_head = 0
    if head is not None:
        # Only head parameters that really live in `model` count, so a stale head object
        # (e.g. replaced by the method) cannot make the no-head number negative.
        in_model = {id(p) for p in _unique_params(model)}
        trainable_head = sum(
            p.numel() for p in _unique_params(head) if p.requires_grad and id(p) in in_model
        )
    trainable_no_head = trainable - trainable_head
    return {
        "backbone_params": int(backbone_params),
        "head_params": int(head_params),
        "total_params": count_params(model),
        "trainable_params": trainable,
        "trainable_params_no_head": trainable_no_head,
        "trainable_pct": 100.0 * trainable / backbone_params,
        "trainable_pct_no_head": 100.0 * trainable_no_head / backbone_params,
    }
