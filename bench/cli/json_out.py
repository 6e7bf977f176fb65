"""`--json`: what `bench run --dry-run`, `bench tune --dry-run`, `bench status` and `bench list`
print, as one JSON document on stdout for scripts and workflow engines. The keys here are the
stable interface the options' help documents; new keys may be added, none renamed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def emit(document: dict[str, Any]) -> None:
    """The document on stdout, nothing else (tuples, paths and numpy scalars as JSON can)."""
    typer.echo(json.dumps(document, indent=2, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    if hasattr(value, "item"):  # a numpy scalar
        return value.item()
    return str(value)


def cell_json(cell, results: Path) -> dict[str, Any]:
    """A planned cell: the columns of the dry-run table, its state, and its whole config."""
    from bench.records import finished

    return {
        "run_id": cell.run_id,
        "method": cell.method,
        "dataset": cell.dataset,
        "shots": cell.shots,
        "split_seed": cell.split_seed,
        "seed": cell.seed,
        "epochs": cell.epochs,
        "lr": cell.lr,
        "img_size": cell.img_size,
        "hparams": cell.hparams,
        "state": "done" if finished(results, cell.run_id) else "to run",
        "config": cell.to_dict(),
    }


def plan_json(the_plan, results: Path, protocol=None) -> dict[str, Any]:
    """`bench run --dry-run --json`; with a --protocol, its settings beside the defaults."""
    from bench.grid import training_images

    images, unknown = training_images(the_plan.cells, the_plan.datasets)
    src = the_plan.source
    extra = {} if protocol is None else {"protocol": protocol_json(protocol)}
    return {
        **extra,
        "cells": [cell_json(c, results) for c in the_plan.cells],
        "backbone": src.name,
        "pretrained": src.pretrained,
        "device": the_plan.cells[0].device if the_plan.cells else None,
        "results": str(results),
        "notes": list(the_plan.notes),
        "compute": {
            "cells": len(the_plan.cells),
            "training_images": images,
            "unknown_size_cells": unknown,
        },
    }


def protocol_json(protocol) -> dict[str, Any]:
    """A paper protocol's settings (`bench.protocol_settings`) and what differs from the paper."""
    from bench.protocol_settings import settings_rows

    return {
        "name": protocol.name,
        "settings": [
            {"setting": r.setting, "protocol": r.protocol, "default": r.suite, "source": r.source}
            for r in settings_rows(protocol)
        ],
        "differences": list(protocol.differences),
    }


def search_json(the_plan, req, search) -> dict[str, Any]:
    """`bench tune --dry-run --json`: each search group, its trials, and the final cells."""
    searches = [
        {
            "group": g.label,
            "trials": len(g.trials),
            "space_size": g.space.size,
            "mode": g.mode,
            "axes": {k: list(v) for k, v in g.space.axes.items()},
            "lr_reference_batch": g.space.lr_rule.reference_batch if g.space.lr_rule else None,
            "rungs": [{"epochs": e, "configurations": n} for e, n in g.rungs],
        }
        for g in search.groups
    ]
    return {
        "budget": req.tune.budget,
        "tune_seed": req.tune.seed,
        "scheduler": req.tune.scheduler,
        "searches": searches,
        "trials": [cell_json(c, req.results) for c in search.trials.cells],
        "final_seeds": list(req.seeds),
        "final_cells": len(search.groups) * len(req.seeds),
        "results": str(req.results),
        "notes": list(dict.fromkeys(the_plan.notes + search.notes)),
    }


def status_json(summary, results: Path) -> dict[str, Any]:
    """`bench status --json`."""
    from bench.status import STATES

    states = STATES if summary.grid else STATES[:-1]
    return {
        "results": str(results),
        "grid": summary.grid,
        "counts": [
            {
                "dataset": block,
                "method": method,
                **{s: row[s] for s in states},
                "total": sum(row.values()),
            }
            for (block, method), row in summary.counts().items()
        ],
        "total": {
            **{s: n for s, n in summary.total().items() if s in states},
            "cells": len(summary.cells),
        },
        "cells": [
            {
                "dataset": c.block,
                "method": c.method,
                "state": c.state,
                "where": c.where,
                "detail": c.detail,
            }
            for c in summary.cells
        ],
        "stale_claims": summary.stale_claims,
        "skipped": [
            {"path": str(path), "what": what, "blocks": summary.blocking.get(path)}
            for path, what in summary.skipped
        ],
    }
