"""The fixed choices of `bench` options (--device, --precision, --launcher, --slurm-cluster,
--scheduler) as `typing.Literal` types, which typer turns into choices shown in help and checked
by click, listing the valid ones.

The members are the constants the checks themselves use (`PRECISIONS` and `DEVICES` in
bench/grid/request.py, ...), so a value added there appears here. They are read from the source
with `ast` rather than imported: those modules import torch (seconds), and `bench run --help`
and shell completion must stay instant. The values stay plain strings, so run ids do not change.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path
from typing import Any, Literal

_BENCH = Path(__file__).resolve().parents[1]


@cache
def constant(module: str, name: str) -> tuple[str, ...]:
    """The tuple of strings bound to `name` at the top of `module` (a path under bench/, e.g.
    'grid/request.py'), read without importing it."""
    path = _BENCH / module
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value:
            return tuple(ast.literal_eval(node.value))
    raise LookupError(f"{path} binds no constant {name}")


def choice(module: str, name: str) -> Any:
    """`Literal[...]` of the constant's values, for an option's annotation."""
    return Literal[constant(module, name)]


Device = choice("grid/request.py", "DEVICES")
Precision = choice("grid/request.py", "PRECISIONS")
Launcher = choice("launchers/options.py", "LAUNCHERS")
Cluster = choice("launchers/options.py", "CLUSTERS")
Scheduler = choice("tuning_plan.py", "SCHEDULERS")
