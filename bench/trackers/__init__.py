"""Optional experiment trackers (`--tracker tensorboard,wandb,mlflow`): live curves of each cell
in TensorBoard, Weights & Biases or MLflow, beside the JSON record (still the source of truth).
Each is an extra (`pip install 'medpeft-bench[wandb]'`), imported only when a cell starts."""

from bench.trackers.registry import TRACKERS, Tracker, parse_trackers, require_trackers
from bench.trackers.session import CellTracking, Trackers, TrackerWarning, summary_of

__all__ = [
    "TRACKERS",
    "CellTracking",
    "Tracker",
    "TrackerWarning",
    "Trackers",
    "parse_trackers",
    "require_trackers",
    "summary_of",
]
