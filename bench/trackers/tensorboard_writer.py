"""TensorBoard: one event-file folder per cell, <tracker-dir>/tensorboard/<run id>, written with
`torch.utils.tensorboard.SummaryWriter` (needs the `tensorboard` package)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SUBFOLDER = "tensorboard"


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder) / SUBFOLDER
        self._writer: Any = None

    def start(self, run_id: str, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step=0: a rerun (--force) replaces the folder's earlier curves in TensorBoard
        # instead of drawing a second line over them
        self._writer = SummaryWriter(log_dir=str(self.folder / run_id), purge_step=0)
        # TensorBoard's text tab renders markdown: a code block keeps the JSON readable
        text = json.dumps(config, indent=2, sort_keys=True, default=str)
        self._writer.add_text("config", f"```\n{text}\n```", global_step=0)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, global_step=step)

    def finish(self, status: str, summary: dict[str, float], step: int) -> None:
        try:
            self.log(summary, step)
            self._writer.add_text("status", status, global_step=step)
        finally:
            self._writer.close()
