"""The fixed choices of `bench` options (--device, --precision, --launcher, --slurm-cluster,
--scheduler, --select) as `typing.Literal` types, which typer turns into choices shown in help and checked
by click, listing the valid ones. The members are the constants the checks themselves use
(bench.option_values), so a value added there appears here; the values stay plain strings, so
run ids do not change."""

from __future__ import annotations

from typing import Any, Literal

from bench.option_values import CLUSTERS, DEVICES, LAUNCHERS, PRECISIONS, SCHEDULERS, SELECT_RULES


def choice(values: tuple[str, ...]) -> Any:
    """`Literal[...]` of the values, for an option's annotation."""
    return Literal[values]


Device = choice(DEVICES)
Precision = choice(PRECISIONS)
Launcher = choice(LAUNCHERS)
Cluster = choice(CLUSTERS)
Scheduler = choice(SCHEDULERS)
Select = choice(tuple(SELECT_RULES))
