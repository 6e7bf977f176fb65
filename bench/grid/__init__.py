"""The grid: a checked request expands to cells (dataset x shots x split seed x method x seed);
its inputs are read and everything that can fail is checked before any cell trains.

    request.checked() -> load_inputs -> expand -> preflight     (plan() does all four)
"""

from bench.grid.expand import Resolved, annotations, data_key, expand, fixed_regime, lr_note
from bench.grid.inputs import Inputs, load_inputs, training_images
from bench.grid.plan import Plan, dry_plan, plan
from bench.grid.request import (
    GridRequest,
    method_settings,
    resolve_device,
    resolve_methods,
    resolve_precision,
)

__all__ = [
    "GridRequest",
    "Inputs",
    "Plan",
    "Resolved",
    "annotations",
    "data_key",
    "dry_plan",
    "expand",
    "fixed_regime",
    "load_inputs",
    "lr_note",
    "method_settings",
    "plan",
    "resolve_device",
    "resolve_methods",
    "resolve_precision",
    "training_images",
]
