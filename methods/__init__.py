"""PEFT methods for timm Vision Transformers, one file each; importing this package registers them all."""

import importlib
import pkgutil

from methods.registry import CORE_METHODS, MethodSpec, get_method, list_methods, register

# Every module in this package registers itself on import, so a new method is one new file.
for _info in pkgutil.iter_modules(__path__):
    if _info.name != "registry":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["CORE_METHODS", "MethodSpec", "get_method", "list_methods", "register"]
