"""A fair tuning budget: every method searches its declared space on validation (`bench tune`).

For each (dataset, shots, split seed, method) group, the method's space (`@register(search=...)`,
narrowed by --set pins and reshaped by --space) is shuffled with the tune seed, and the first
`budget` configurations are run as `trial` cells: trained at the tune seed, scored on the
validation primary metric, with the test split sealed (`LoadedDataset.sealed`). A larger budget
extends a smaller one's trials, which makes the search resumable across budgets and gives the
report an exact best-of-k curve. The best trial (TIE_RULE breaks ties) is then run for every
requested seed and tested once per seed, as a `final` cell.

Grid search is the special case budget >= space size: every configuration runs. Random search
over the grid is what Bergstra & Bengio (JMLR 2012) recommend when only some knobs matter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.config import CellConfig
from bench.console import grid_progress
from bench.execute import GridOutcome, run_grid
from bench.tuning_plan import Search, prepare, trial_plan
from bench.tuning_select import final_annotation, final_cells, rank, selected_text


@dataclass
class TuneOutcome:
    """What a search ran, what it selected, and the groups it could not finish."""

    trials: GridOutcome  # of the search
    finals: GridOutcome | None = None  # of the selected configurations (None: not reached)
    waiting: list[str] = field(default_factory=list)  # groups whose trials are not all finished
    unscored: list[str] = field(default_factory=list)  # groups where no trial has a score
    selected: dict[str, dict[str, Any]] = field(default_factory=dict)  # group label -> config

    @property
    def interrupted(self) -> bool:
        return bool(self.trials.interrupted or (self.finals and self.finals.interrupted))


def run_tuning(
    plan_: Any,
    req: Any,
    *,
    console=None,
    progress: bool = True,
    run_cell=None,
    search: Search | None = None,
    stage: Callable[[Any], GridOutcome] | None = None,
) -> TuneOutcome:
    """Search, select and run the selected configurations. Each rung's trials run as a grid of
    their own (claimed, resumable, one record each); a group moves on (promotes, or selects)
    only when every one of its trials has finished, so a rerun after a crash or Ctrl-C selects
    exactly what an uninterrupted run would have. `stage`: runs one such grid (a rung's trials,
    then the finals) and returns the records its cells have; here, in this process, unless
    given (a launcher's, bench.launchers.stages)."""
    search = search or prepare(plan_, req)
    groups = search.groups

    def run(grid_plan: Any) -> GridOutcome:
        if stage is not None:
            return stage(grid_plan)
        with grid_progress(console, enabled=progress) as events:
            return run_grid(grid_plan, req, events=events, run_cell=run_cell)

    outcome = TuneOutcome(trials=GridOutcome(records=[], ran=0, skipped=0))
    alive = {id(g): list(range(len(g.configs))) for g in groups}
    by_rung: dict[int, list[list[dict[str, Any] | None]]] = {id(g): [] for g in groups}
    chosen: dict[int, int] = {}
    active = list(groups)
    for r in range(max((len(g.rungs) for g in groups), default=0)):
        todo = [g for g in active if r < len(g.rungs)]
        if not todo:
            break
        rung_plan = search.trials if r == 0 else trial_plan(plan_, todo, r, alive)
        done = run(rung_plan)
        _merge(outcome.trials, done)
        if done.interrupted:
            return outcome
        by_id = {rec["run_id"]: rec for rec in done.records}
        for g in todo:
            records = [by_id.get(g.rung_cell(i, r).run_id) if i in alive[id(g)] else None
                       for i in range(len(g.configs))]  # fmt: skip
            if any(
                records[i] is None or records[i].get("status") == "failed" for i in alive[id(g)]
            ):
                outcome.waiting.append(g.label)
                active.remove(g)
                continue
            by_rung[id(g)].append(records)
            ranked = rank(g, records)
            if not ranked:
                outcome.unscored.append(g.label)
                active.remove(g)
            elif r == len(g.rungs) - 1:
                chosen[id(g)] = ranked[0]
            else:  # successive halving: the best 1/eta go on to the next rung
                alive[id(g)] = sorted(ranked[: g.rungs[r + 1][1]])
    finals: list[CellConfig] = []
    annotations = {}
    for g in groups:
        if id(g) not in chosen:
            continue
        best = chosen[id(g)]
        outcome.selected[g.label] = g.configs[best]
        if console is not None:
            last = by_rung[id(g)][-1]
            console.print(f"[green]selected[/] {g.label}: {selected_text(g, best, last)}")
        note = final_annotation(g, best, by_rung[id(g)], req.tune)
        for cell in final_cells(g, best, req.seeds, req.tune):
            finals.append(cell)
            annotations[cell.run_id] = note
    final_plan = dataclasses.replace(plan_, cells=finals, notes=[], annotations=annotations)
    outcome.finals = run(final_plan)
    return outcome


def _merge(total: Any, part: Any) -> None:
    """Add one rung's GridOutcome to the search's."""
    total.records += part.records
    total.ran += part.ran
    total.skipped += part.skipped
    total.busy += part.busy
    total.interrupted = total.interrupted or part.interrupted
