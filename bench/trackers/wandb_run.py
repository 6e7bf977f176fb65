"""Weights & Biases: one W&B run per cell, named by its run id, in $WANDB_PROJECT (default
`medpeft-bench`); $WANDB_MODE (offline, disabled), $WANDB_DIR and the other WANDB_* variables
are read by wandb itself (https://docs.wandb.ai/guides/track/environment-variables)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEFAULT_PROJECT = "medpeft-bench"
CLEAN_END = ("ok", "trial")  # statuses whose run ends with exit code 0


class WandbTracker:
    name = "wandb"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._run: Any = None

    def start(self, run_id: str, config: dict[str, Any]) -> None:
        import wandb

        where = {}
        if not os.environ.get("WANDB_DIR"):
            # wandb's local files (<dir>/wandb/run-…) beside the records, not in the cwd
            self.folder.mkdir(parents=True, exist_ok=True)
            where["dir"] = str(self.folder)
        self._run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            name=run_id,
            config=config,
            **where,
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._run.log(metrics, step=step)

    def finish(self, status: str, summary: dict[str, float], step: int) -> None:
        try:
            self._run.summary.update({**summary, "status": status})
        finally:
            self._run.finish(exit_code=0 if status in CLEAN_END else 1)
