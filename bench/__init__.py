"""medpeft-bench: benchmark PEFT methods for Vision Transformers on medical image classification."""

__version__ = "0.1.0"
