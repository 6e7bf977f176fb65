"""`bench export`: rebuild a finished run's adapted model from its record and saved tensors, and
write it as a self-contained folder (bench.export)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import bench.cli.options as o
from bench.cli.common import fail
from bench.console import console


def export(
    run_id: Annotated[
        str, typer.Argument(help="The run to export: its record's file name without .json.")
    ],
    results: o.ResultsIn = Path("results"),
    out: Annotated[
        Path | None, typer.Option(help="Folder to write (default: exports/RUN_ID).")
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            help="The pretrained weights file the run used, when it has moved since (its "
            "sha256 is checked against the record's)."
        ),
    ] = None,
) -> None:
    """Rebuild a run's model (backbone, method, its saved trainable tensors) and write
    model.safetensors (the whole adapted model), model.json (how to build it) and, for peft
    methods, adapter/ (PeftModel.from_pretrained, push_to_hub)."""
    from bench.errors import UserError
    from bench.export_checks import check_out_folder, finished_record, out_folder

    try:
        # torch-free: a wrong run id or --out fails at once, not after the imports
        finished_record(run_id, results)
        check_out_folder(out_folder(run_id, out))
        from bench.export import export_run

        folder = export_run(run_id, results, out, weights=weights)
    except UserError as exc:
        fail(str(exc))
    console().print(f"exported {run_id} to {folder}/ (load_export(folder) rebuilds it)")
