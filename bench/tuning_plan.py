"""What a search tries: the tune request, each method's resolved space, its trials and their plan."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.backbones import method_img_size
from bench.config import CellConfig
from bench.errors import UserError
from bench.grid import lr_note, method_settings
from bench.grid.preflight import preflight_builds
from bench.option_values import TRAIN_AXES
from bench.space_options import canonical_spaces, declared_space, no_space, searched_values

# Re-exported: the search request is built, and checked, before torch is imported.
from bench.tuning_request import DEFAULT_BUDGET as DEFAULT_BUDGET
from bench.tuning_request import TuneRequest as TuneRequest

if TYPE_CHECKING:
    from methods.search import SearchSpace

# A product of grids this large is a typo in --space, not a search anyone will run.
MAX_SPACE = 1_000_000


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


def resolve_space(method: str, req: Any, tune: TuneRequest) -> SearchSpace:
    """The space `method` searches under this request: its declared space for the optimizer it
    trains with, each --space axis replacing (or adding) a grid, minus the keys --set or --lr
    pin. Every mistake is a UserError before anything trains."""
    # Inner: `methods` imports torch, and this module must not: tuning_select imports it, and
    # the report reads tuning_select's TIE_RULE without torch.
    from methods import get_method
    from methods.search import SearchSpace

    spec = get_method(method)
    train, _ = method_settings(method, req)
    optimizer = train["optimizer"]
    overrides = tune.spaces.get(method, {})
    protocol_pins = [k for k in TRAIN_AXES if k in req.method_train.get(method, {})]
    space_of = declared_space(optimizer, list(spec.search), protocol_pins)
    declared = spec.search[space_of] if space_of else None
    if declared is None and "lr" not in overrides:
        raise no_space(method, optimizer, list(spec.search))
    axes: dict[str, tuple[Any, ...]] = dict(declared.axes) if declared else {}
    axes.setdefault("weight_decay", (train["weight_decay"],))
    sets = req.sets.get(method, {})
    defaults = {k: spec.train_defaults[k] for k in TRAIN_AXES} | dict(spec.hparams)
    axes |= searched_values(
        method,
        overrides,
        defaults=defaults,
        limits=spec.limits,
        sets=sets,
        lr_pinned=req.lr is not None,
    )
    pinned = [k for k in axes if k in sets or (k in protocol_pins and k not in overrides)]
    if req.lr is not None:
        pinned.append("lr")
    for key in dict.fromkeys(pinned):
        axes.pop(key)
    space = SearchSpace(
        axes,
        lr_rule=declared.lr_rule if declared and "lr" in axes else None,
        source=(declared.source if declared else "")
        + ("; --space " + ",".join(overrides) if overrides else ""),
        method=method,
        optimizer=optimizer,
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
    space: SearchSpace
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
    space: SearchSpace,
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
    hparams = {**base.hparams, **space.knobs(config)}
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
    from methods import get_method  # inner: `methods` imports torch (see resolve_space)

    tune: TuneRequest = req.tune

    grid = list(dict.fromkeys(c.method for c in plan_.cells))
    tune.spaces = canonical_spaces(tune.spaces, grid, lambda name: get_method(name).name)
    spaces: dict[str, SearchSpace] = {}
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
            if space.knobs(config):  # a knob may change the input size (FPT+)
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
            "lr": lr_entry(group, config, cell),
        }
    }


def lr_entry(group: Group, config: dict[str, Any], cell: CellConfig) -> dict[str, Any]:
    """The record's lr note: the effective rate, with the base value and rule that gave it."""
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
    trials: Any  # bench.grid.Plan
    notes: list[str]


def prepare(plan_: Any, req: Any) -> Search:
    """Resolve every space and list every trial; outside a dry run, also build each distinct
    trial configuration once, so a value the method refuses (--space lora.rank=0) fails now,
    before any training, rather than as a failed trial that every rerun retries."""
    groups = search_groups(plan_, req)
    trials = trial_plan(plan_, groups)
    notes = preflight_builds(trials.cells, trials.datasets, plan_.source) if plan_.datasets else []
    return Search(groups, trials, notes)
