"""PEFT methods for timm Vision Transformers, one file each; importing this package registers them all."""

import importlib
import logging
import pkgutil

from methods.registry import CORE_METHODS, MethodSpec, get_method, list_methods, register


class _NoCudaRuntimeNote(logging.Filter):
    """Drops torch's "No CUDA runtime is found, using CUDA_HOME=..." and nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No CUDA runtime is found")


# peft's BOFT imports torch.utils.cpp_extension to try its CUDA kernel, and that import logs the
# note above on any machine without a GPU: about compiling extensions, which the suite does not
# do, it reads as a fault in every CPU run. Set here, before any method can trigger the import.
logging.getLogger("torch.utils.cpp_extension").addFilter(_NoCudaRuntimeNote())

# Every module in this package registers itself on import, so a new method is one new file.
for _info in pkgutil.iter_modules(__path__):
    if _info.name != "registry":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["CORE_METHODS", "MethodSpec", "get_method", "list_methods", "register"]
