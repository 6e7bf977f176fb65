"""MLflow: one MLflow run per cell, named by its run id. $MLFLOW_TRACKING_URI chooses the server
or store (default: a file store <tracker-dir>/mlruns) and $MLFLOW_EXPERIMENT_NAME the experiment
(default `medpeft-bench`); the cell's config goes in as flat params (`hparams.rank`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEFAULT_EXPERIMENT = "medpeft-bench"
SUBFOLDER = "mlruns"
# the record's status -> MLflow's RunStatus name
END_STATUS = {"ok": "FINISHED", "trial": "FINISHED", "interrupted": "KILLED"}


class MlflowTracker:
    name = "mlflow"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._mlflow: Any = None

    def start(self, run_id: str, config: dict[str, Any]) -> None:
        import mlflow

        from bench.report.filters import flat_config

        if not os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow.set_tracking_uri((self.folder / SUBFOLDER).resolve().as_uri())
        if not (os.environ.get("MLFLOW_EXPERIMENT_NAME") or os.environ.get("MLFLOW_EXPERIMENT_ID")):
            mlflow.set_experiment(DEFAULT_EXPERIMENT)
        self._mlflow = mlflow
        mlflow.start_run(run_name=run_id)
        params = flat_config({"config": config})
        params.pop("status")  # flat_config adds the record's status; a cell has none yet
        mlflow.log_params(params)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self._mlflow.log_metric(key, value, step=step)

    def finish(self, status: str, summary: dict[str, float], step: int) -> None:
        try:
            self.log(summary, step)
            self._mlflow.set_tag("status", status)
        finally:
            self._mlflow.end_run(status=END_STATUS.get(status, "FAILED"))
