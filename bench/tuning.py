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
import hashlib
import itertools
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

from bench.config import CellConfig, coerce
from bench.errors import UserError

TIE_RULE = (
    "ties on the validation score go to the smaller learning rate, then the smaller weight "
    "decay, then the earlier trial (VPT's rule, Jia et al. 2022)"
)
DEFAULT_BUDGET = 8
# A product of grids this large is a typo in --space, not a search anyone will run.
MAX_SPACE = 1_000_000
TRAIN_AXES = ("lr", "weight_decay")


@dataclass
class TuneRequest:
    """What `bench tune` / `bench run --tune` asked for."""

    budget: int = DEFAULT_BUDGET
    seed: int = 0  # shuffles each space and trains the trials
    # method -> axis -> raw comma-separated values (--space METHOD.KEY=a,b,c)
    spaces: dict[str, dict[str, str]] = field(default_factory=dict)
    scheduler: str = "none"  # SCHEDULERS
    eta: int = 3  # successive halving: keep the best 1/eta of each rung

    def __post_init__(self) -> None:
        """Bad values fail here, as the command line builds the request, before any data loads."""
        if self.budget < 1:
            raise UserError(f"--budget must be >= 1, got {self.budget}")
        if self.seed < 0:
            raise UserError(f"--tune-seed must be >= 0, got {self.seed}")
        if self.scheduler not in SCHEDULERS:
            raise UserError(
                f"--scheduler must be one of {', '.join(SCHEDULERS)}, not {self.scheduler!r}"
            )
        if self.eta < 2:
            raise UserError(f"--eta must be >= 2 (successive halving keeps 1/eta), got {self.eta}")


# none: every trial trains the cell's epochs. halving: successive halving (Jamieson & Talwalkar,
# AISTATS 2016; Li et al., Hyperband, JMLR 2018): all `budget` configurations train a short
# schedule, the best 1/eta go on to eta times the epochs, and so on up to the full epochs.
SCHEDULERS = ("none", "halving")


def rungs(configs: int, epochs: int, scheduler: str, eta: int) -> list[tuple[int, int]]:
    """[(epochs, configurations)] per rung: one rung of `epochs` without a scheduler; with
    halving, as many rungs as leave at least one configuration and one epoch at the first, the
    last at the full epochs. rungs(9, 9, "halving", 3) -> [(1, 9), (3, 3), (9, 1)]."""
    if scheduler == "none":
        return [(epochs, configs)]
    levels = 1
    while configs // eta**levels >= 1 and epochs // eta**levels >= 1:
        levels += 1
    out = []
    for i in range(levels):
        e = max(1, round(epochs / eta ** (levels - 1 - i)))
        out.append((e, configs // eta**i))
    return out


@dataclass(frozen=True)
class Space:
    """One method's resolved search space: grids by axis (lr values are base values under
    `lr_rule` when it is set), and the keys pinned by --set/--lr that it does not search."""

    method: str
    optimizer: str
    axes: dict[str, tuple[Any, ...]]
    lr_rule: Any  # methods.registry.LrRule | None
    source: str
    pinned: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.axes.values())

    def describe(self) -> dict[str, Any]:
        """What the records say about the space."""
        return {
            "optimizer": self.optimizer,
            "axes": {k: list(v) for k, v in self.axes.items()},
            "lr_rule": self.lr_rule.describe() if self.lr_rule else None,
            "source": self.source,
            "pinned": list(self.pinned),
            "size": self.size,
        }

    def digest(self) -> str:
        """Identifies what is searched (not how it is described): it keys the search order and
        tags the selected runs, so rewording a space's `source` keeps every trial valid."""
        what = {k: v for k, v in self.describe().items() if k != "source"}
        blob = json.dumps(what, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def order(self, seed: int) -> list[dict[str, Any]]:
        """Every configuration, in the order a search with this seed tries them: the product of
        the grids shuffled by a generator seeded with (seed, method, space), so a search is
        reproducible and a budget of k tries the first k of a larger budget's trials."""
        keys = list(self.axes)
        product = itertools.product(*self.axes.values())
        combos = [dict(zip(keys, values, strict=True)) for values in product]
        random.Random(f"medpeft-tune:{seed}:{self.method}:{self.digest()}").shuffle(combos)
        return combos


def resolve_space(method: str, req: Any, tune: TuneRequest) -> Space:
    """The space `method` searches under this request: its declared space for the optimizer it
    trains with, each --space axis replacing (or adding) a grid, minus the keys --set or --lr
    pin. Every mistake is a UserError before anything trains."""
    from bench.grid import method_settings
    from methods import get_method
    from methods.registry import TRAIN_KEYS

    spec = get_method(method)
    train, _ = method_settings(method, req)
    optimizer = train["optimizer"]
    declared = spec.space_for(optimizer)
    overrides = tune.spaces.get(method, {})
    if declared is None and "lr" not in overrides:
        have = ", ".join(spec.search) or "none"
        raise UserError(
            f"{method} declares no search space for optimizer {optimizer} (declared for: {have});"
            f" give one with --space {method}.lr=A,B,C (and --space {method}.weight_decay=...)"
        )
    axes: dict[str, tuple[Any, ...]] = dict(declared.axes()) if declared else {}
    axes.setdefault("weight_decay", (train["weight_decay"],))
    sets = req.sets.get(method, {})
    for key, raw in overrides.items():
        if key == "optimizer":
            raise UserError(
                f"--space {method}.optimizer: the optimizer is not searched (its learning rates "
                f"differ in scale); fix it with --set {method}.optimizer=..."
            )
        if key not in TRAIN_KEYS and key not in spec.hparams:
            valid = ", ".join(["lr", "weight_decay", *spec.hparams])
            raise UserError(f"--space {method}.{key}: no such hyperparameter; valid: {valid}")
        if key in sets:
            raise UserError(
                f"{method}.{key} is both pinned (--set) and searched (--space); keep one"
            )
        default = spec.train_defaults[key] if key in TRAIN_KEYS else spec.hparams[key]
        values = [
            coerce(v.strip(), default, what=f"--space {method}.{key}") for v in raw.split(",")
        ]
        axes[key] = tuple(dict.fromkeys(values))  # duplicates would only repeat trials
    pinned = [k for k in axes if k in sets]
    if req.lr is not None:
        if "lr" in overrides:
            raise UserError("--lr pins every method's learning rate; drop it or --space *.lr")
        pinned.append("lr")
    for key in dict.fromkeys(pinned):
        axes.pop(key)
    for value in axes.get("lr", ()):
        if not (isinstance(value, (int, float)) and 0 < value < math.inf):
            raise UserError(f"{method}: every learning rate in the space must be > 0, got {value}")
    for value in axes.get("weight_decay", ()):
        if not (isinstance(value, (int, float)) and 0 <= value < math.inf):
            raise UserError(f"{method}: every weight decay in the space must be >= 0, got {value}")
    space = Space(
        method=method,
        optimizer=optimizer,
        axes=axes,
        lr_rule=declared.lr_rule if declared and "lr" in axes else None,
        source=(declared.source if declared else "")
        + ("; --space " + ",".join(overrides) if overrides else ""),
        pinned=tuple(dict.fromkeys(pinned)),
    )
    if space.size > MAX_SPACE:
        raise UserError(
            f"{method}: the search space has {space.size:,} configurations (more than "
            f"{MAX_SPACE:,}); narrow it with --space or --set"
        )
    return space


@dataclass
class Group:
    """One search: a method on one (dataset, shots, split seed), its space and trial cells."""

    base: CellConfig  # the untuned cell at the first requested seed
    space: Space
    configs: list[dict[str, Any]]  # the trials' configurations, in trial order
    trials: list[CellConfig]  # at the first rung's epochs
    mode: str  # "grid" (the whole space) or "random" (a seeded sample of it)
    rungs: list[tuple[int, int]] = field(default_factory=list)  # (epochs, configurations)

    def rung_cell(self, index: int, rung: int) -> CellConfig:
        """Trial `index` trained at rung `rung`'s epochs (the same configuration)."""
        if rung == 0:
            return self.trials[index]
        return dataclasses.replace(self.trials[index], epochs=self.rungs[rung][0])

    @property
    def label(self) -> str:
        b = self.base
        shots = f" {b.shots}-shot x{b.split_seed}" if b.shots is not None else ""
        return f"{b.dataset}{shots}/{b.method}"


def trial_cell(
    base: CellConfig,
    space: Space,
    config: dict[str, Any],
    *,
    seed: int,
    img_size: int,
    epochs: int,
) -> CellConfig:
    """The cell that trains `config` as a trial: the group's cell with the searched values, the
    learning rate scaled by the space's rule, at the tune seed, for the first rung's epochs."""
    lr = config.get("lr", base.lr)
    if "lr" in config and space.lr_rule is not None:
        lr = space.lr_rule.scale(lr, base.batch_size)
    hparams = {**base.hparams, **{k: v for k, v in config.items() if k not in TRAIN_AXES}}
    return dataclasses.replace(
        base,
        seed=seed,
        lr=float(lr),
        weight_decay=float(config.get("weight_decay", base.weight_decay)),
        hparams=hparams,
        img_size=img_size,
        epochs=epochs,
        tuning={"role": "trial"},
    )


def search_groups(plan_: Any, req: Any) -> list[Group]:
    """Each (dataset, shots, split seed, method) of the plan with its space and its trials."""
    from bench.backbones import method_img_size

    tune: TuneRequest = req.tune
    from methods import get_method

    grid = list(dict.fromkeys(c.method for c in plan_.cells))
    canonical: dict[str, dict[str, str]] = {}
    for name, values in tune.spaces.items():
        try:  # an alias (fpt) names the method it stands for (fpt-plus)
            method = get_method(name).name
        except KeyError as exc:
            raise UserError(f"--space {name}.…: {exc.args[0]}") from None
        if method not in grid:
            raise UserError(f"--space {name}.…: not a method of this grid ({', '.join(grid)})")
        canonical.setdefault(method, {}).update(values)
    tune.spaces = canonical
    spaces: dict[str, Space] = {}
    groups: list[Group] = []
    seen: set[tuple] = set()
    for cell in plan_.cells:
        key = (cell.dataset, cell.shots, cell.split_seed, cell.method)
        if key in seen:
            continue
        seen.add(key)
        if cell.method not in spaces:
            spaces[cell.method] = resolve_space(cell.method, req, tune)
        space = spaces[cell.method]
        configs = space.order(tune.seed)[: tune.budget]
        steps = rungs(len(configs), cell.epochs, tune.scheduler, tune.eta)
        trials = []
        for config in configs:
            size = cell.img_size
            if set(config) - set(TRAIN_AXES):  # a knob may change the input size (FPT+)
                size = method_img_size(
                    cell.method,
                    {**cell.hparams, **config},
                    requested=req.img_size,
                    backbone=req.backbone,
                    data_size=plan_.data_sizes.get(cell.dataset),
                )
            trials.append(
                trial_cell(cell, space, config, seed=tune.seed, img_size=size, epochs=steps[0][0])
            )
        mode = "grid" if len(configs) == space.size else "random"
        groups.append(Group(cell, space, configs, trials, mode, steps))
    return groups


def trial_annotation(group: Group, config: dict[str, Any], cell: CellConfig) -> dict[str, Any]:
    """The `hyperparameters` entry of a trial record."""
    return {
        "hyperparameters": {
            "regime": "trial",
            "source": f"search of {group.label}",
            "searched": config,
            "lr": _lr_entry(group, config, cell),
        }
    }


def _lr_entry(group: Group, config: dict[str, Any], cell: CellConfig) -> dict[str, Any]:
    """The record's lr note: the effective rate, with the base value and rule that gave it."""
    from bench.grid import lr_note

    ruled = "lr" in config and group.space.lr_rule is not None
    return lr_note(
        cell.lr,
        rule=group.space.lr_rule if ruled else None,
        base=config["lr"] if ruled else None,
        batch_size=cell.batch_size,
    )


def trial_plan(
    plan_: Any, groups: list[Group], rung: int = 0, alive: dict[int, list[int]] | None = None
) -> Any:
    """The plan of one rung of the search (the first: every trial): the trials of each group
    still `alive` there (by index; all without `alive`), on datasets whose test split is sealed."""
    picked = [
        (g, i)
        for g in groups
        if rung < len(g.rungs)
        for i in (alive[id(g)] if alive is not None else range(len(g.configs)))
    ]
    cells = [g.rung_cell(i, rung) for g, i in picked]
    annotations = {
        cell.run_id: trial_annotation(g, g.configs[i], cell)
        for (g, i), cell in zip(picked, cells, strict=True)
    }
    return dataclasses.replace(
        plan_,
        cells=cells,
        datasets={k: d.sealed() for k, d in plan_.datasets.items()},
        notes=[],
        annotations=annotations,
    )


@dataclass
class Search:
    """A search ready to run: its groups, the plan of their trials, notes to show first."""

    groups: list[Group]
    trials: Any  # runner.Plan
    notes: list[str]


def prepare(plan_: Any, req: Any) -> Search:
    """Resolve every space and list every trial; outside a dry run, also build each distinct
    trial configuration once, so a value the method refuses (--space lora.rank=0) fails now,
    before any training, rather than as a failed trial that every rerun retries."""
    from bench.grid.preflight import preflight_builds

    groups = search_groups(plan_, req)
    trials = trial_plan(plan_, groups)
    notes = preflight_builds(trials.cells, trials.datasets, plan_.source) if plan_.datasets else []
    return Search(groups, trials, notes)


def score(record: dict[str, Any] | None) -> float | None:
    """A trial's validation score, larger is better; None when it has none."""
    if record is None or record.get("status") != "trial":
        return None
    trial = record.get("trial") or {}
    value = trial.get("val_primary")
    if trial.get("outcome") != "ok" or value is None:
        return None
    return float(value) if trial.get("higher_is_better", True) else -float(value)


def rank(group: Group, records: list[dict[str, Any] | None]) -> list[int]:
    """Indices of the scored trials, best first: by validation score, ties by TIE_RULE."""
    scored = [(i, s) for i, s in enumerate(map(score, records)) if s is not None]
    trials = group.trials
    scored.sort(key=lambda t: (-t[1], trials[t[0]].lr, trials[t[0]].weight_decay, t[0]))
    return [i for i, _ in scored]


def select(group: Group, records: list[dict[str, Any] | None]) -> int | None:
    """Index of the selected trial: the best validation score, ties broken by TIE_RULE; None
    when no trial has a score."""
    ranked = rank(group, records)
    return ranked[0] if ranked else None


def final_cells(group: Group, chosen: int, seeds: list[int], tune: TuneRequest) -> list[CellConfig]:
    """The selected configuration at every requested seed, tagged with the search that chose
    it (a final's run id differs from an untuned run's, and from another budget's)."""
    tag = {"role": "final", "budget": tune.budget, "tune_seed": tune.seed,
           "space": group.space.digest()}  # fmt: skip
    if tune.scheduler != "none":  # in the id only when used: plain searches keep theirs
        tag |= {"scheduler": tune.scheduler, "eta": tune.eta}
    selected = dataclasses.replace(group.trials[chosen], epochs=group.base.epochs)
    return [dataclasses.replace(selected, seed=s, tuning=tag) for s in seeds]


def final_annotation(
    group: Group, chosen: int, by_rung: list[list[dict[str, Any] | None]], tune: TuneRequest
) -> dict[str, Any]:
    """What a final record says about the search that chose it: the budget, the space, every
    trial in order with its validation score (at the last rung it reached), the selected one,
    and, with a scheduler, each rung's epochs and trials."""
    config = group.configs[chosen]
    records = [next((rung[i] for rung in reversed(by_rung) if rung[i]), None)
               for i in range(len(group.configs))]  # fmt: skip
    metric = next(((r.get("trial") or {}).get("metric") for r in records if r), None)
    note = {
        "hyperparameters": {
            "regime": "tuned",
            "source": f"search, budget {tune.budget}, selected on validation {metric}",
            "searched": config,
            "lr": _lr_entry(group, config, group.trials[chosen]),
        },
        "tuning": {
            "budget": tune.budget,
            "tune_seed": tune.seed,
            "mode": group.mode,
            "space": group.space.describe(),
            "selected_by": f"validation {metric}",
            "tie_rule": TIE_RULE,
            "selected": chosen,
            "trials": [
                {
                    "run_id": cell.run_id,
                    "config": cfg,
                    "outcome": (rec.get("trial") or {}).get("outcome") if rec else None,
                    "val_primary": (rec.get("trial") or {}).get("val_primary") if rec else None,
                }
                for cfg, cell, rec in zip(group.configs, group.trials, records, strict=True)
            ],
        },
    }
    if tune.scheduler != "none":
        note["tuning"]["scheduler"] = {
            "name": tune.scheduler,
            "eta": tune.eta,
            "rungs": [
                {
                    "epochs": epochs,
                    "trials": [i for i, r in enumerate(rung) if r is not None],
                    "val_primary": [_val(r) for r in rung if r is not None],
                }
                for (epochs, _), rung in zip(group.rungs, by_rung, strict=False)
            ],
        }
        for entry, cell_records in zip(note["tuning"]["trials"], zip(*by_rung, strict=True),
                                       strict=True):  # fmt: skip
            entry["epochs"] = max(
                (e for (e, _), r in zip(group.rungs, cell_records, strict=False) if r), default=None
            )
    return note


def _val(record: dict[str, Any] | None) -> float | None:
    return ((record or {}).get("trial") or {}).get("val_primary")


def selected_text(group: Group, chosen: int, records: list[dict[str, Any] | None]) -> str:
    """'lr=1 (0.125 at batch 32), weight_decay=0.001, prompt_length=5: val accuracy 0.904'."""
    config, cell = group.configs[chosen], group.trials[chosen]
    parts = []
    for key, value in config.items():
        text = f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
        if key == "lr" and group.space.lr_rule is not None:
            text += f" ({cell.lr:g} at batch {cell.batch_size})"
        parts.append(text)
    trial = (records[chosen] or {}).get("trial") or {}
    return ", ".join(parts) + f": val {trial.get('metric')} {trial.get('val_primary'):.4f}"


@dataclass
class TuneOutcome:
    trials: Any  # runner.GridOutcome of the search
    finals: Any = None  # runner.GridOutcome of the selected configurations (None: not reached)
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
) -> TuneOutcome:
    """Search, select and run the selected configurations. Each rung's trials run as a grid of
    their own (claimed, resumable, one record each); a group moves on (promotes, or selects)
    only when every one of its trials has finished, so a rerun after a crash or Ctrl-C selects
    exactly what an uninterrupted run would have."""
    from bench.console import grid_progress
    from bench.execute import GridOutcome, run_grid

    def run(grid_plan: Any) -> GridOutcome:
        with grid_progress(console, enabled=progress) as events:
            return run_grid(grid_plan, req, events=events, run_cell=run_cell)

    search = search or prepare(plan_, req)
    groups = search.groups
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
