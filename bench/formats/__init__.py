"""Dataset formats, one module each; a card's `format` names one, and `get_format` returns it."""

import importlib

from bench.formats.base import (
    SPLITS,
    Format,
    ProgressFn,
    SplitArrays,
    format_names,
    get_format,
    register,
)

# Each module registers its format on import; this order is the one error messages list them in.
for _module in ("demo", "medmnist", "imagefolder", "csv_manifest", "split_list"):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "SPLITS",
    "Format",
    "ProgressFn",
    "SplitArrays",
    "format_names",
    "get_format",
    "register",
]
