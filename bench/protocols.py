"""Paper protocols: a paper's grid as a data file (`bench/protocols/*.toml`), expanded by
`bench run --protocol NAME`; its published table (`bench/papers/*.csv`) is set beside the
reproduced numbers by `bench report --paper NAME` (`bench.report.paper`).

A protocol file says where each setting comes from and, where the reference code and the paper
disagree, which one it follows and why; this module only reads it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import MAX_INT_VALUE
from bench.errors import UserError
from bench.option_values import PRECISIONS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
PROTOCOL_DIR = HERE / "protocols"
PAPER_DIR = HERE / "papers"


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    paper_csv: str
    backbone: str
    img_size: int | None
    epochs: int
    batch_size: int
    augment: str
    datasets: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    shots: tuple[int, ...] | None = None
    split_seeds: tuple[int, ...] | None = None
    paper_methods: dict[str, str] = field(default_factory=dict)
    paper_datasets: dict[str, str] = field(default_factory=dict)
    dataset_lr_methods: tuple[str, ...] = ()
    paper_metric_note: str = ""
    # the references' precision (fp32): --precision given beside --protocol overrides it
    precision: str = "fp32"
    # the paper's training settings for every method, and per method ({method: {key: value}})
    training: dict[str, Any] = field(default_factory=dict)
    method_training: dict[str, dict[str, Any]] = field(default_factory=dict)
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)  # {method: {key: value}}
    # where each value comes from: "lr", "full.backbone_dropout", "lora.targets", "epochs", ...
    sources: dict[str, str] = field(default_factory=dict)
    # what this protocol cannot match or chose otherwise, stated beside the paper's table
    differences: tuple[str, ...] = ()
    path: Path | None = None

    def training_for(self, method: str) -> dict[str, Any]:
        """The training settings the protocol pins for `method`."""
        return {**self.training, **self.method_training.get(method, {})}


def list_protocols() -> list[str]:
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.toml"))


def get_protocol(name: str) -> Protocol:
    """A shipped protocol by name; only names `list_protocols` gives are looked up, so a name
    such as '../x' never reaches the file system."""
    available = list_protocols()
    if name not in available:
        raise UserError(f"unknown protocol {name!r}; available: {', '.join(available)}")
    return load_protocol(PROTOCOL_DIR / f"{name}.toml")


def find_protocol(name: str) -> Protocol:
    """--protocol: a shipped protocol by name, or the user's own protocol file (a path ending in
    .toml), checked as a shipped one is."""
    if not name.endswith(".toml"):
        return get_protocol(name)
    path = Path(name).expanduser()
    if not path.is_file():
        raise UserError(
            f"--protocol {name}: no such protocol file; give a .toml path or a shipped name "
            f"({', '.join(list_protocols())})"
        )
    return load_protocol(path)


# Each key a protocol file may hold: (its kind, required).
_KEYS: dict[str, tuple[str, bool]] = {
    "name": ("a string", True),
    "title": ("a string", True),
    "paper_csv": ("a string", True),
    "backbone": ("a string", True),
    "img_size": ("an integer", False),
    "epochs": ("an integer", True),
    "batch_size": ("an integer", True),
    "augment": ("a string", True),
    "datasets": ("a list of strings", True),
    "methods": ("a list of strings", True),
    "seeds": ("a list of integers", True),
    "shots": ("a list of integers", False),
    "split_seeds": ("a list of integers", False),
    "paper_methods": ("a table of strings", False),
    "paper_datasets": ("a table of strings", False),
    "dataset_lr_methods": ("a list of strings", False),
    "paper_metric_note": ("a string", False),
    "precision": ("a string", False),
    "training": ("a table", False),
    "hparams": ("a table", False),
    "sources": ("a table of strings", False),
    "differences": ("a list of strings", False),
}
# The training settings a protocol may pin, with the kind of value each takes.
TRAINING_KEYS: dict[str, str] = {
    "optimizer": "a string",
    "lr": "a number",
    "weight_decay": "a number",
    "warmup_epochs": "a number",
    "grad_clip": "a number",
    "backbone_dropout": "a number",
    "head_init": "a string",
    "lr_step": "a string",
    "decay": "a string",
    "select": "a string",
}
# The smallest value each integer setting may take.
_MINIMUM = {"img_size": 8, "epochs": 1, "batch_size": 1, "seeds": 0, "shots": 1, "split_seeds": 0}


def load_protocol(path: Path) -> Protocol:
    """Read and check one protocol file; every mistake is a UserError naming the file and key."""
    path = Path(path)
    where = f"protocol file {path}"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"{where}: {exc}") from None
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}; valid: {', '.join(_KEYS)}")
    missing = [k for k, (_, required) in _KEYS.items() if required and k not in raw]
    if missing:
        raise UserError(f"{where}: missing key(s) {missing}")
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        kind = _KEYS[key][0]
        if not _is(value, kind):
            raise UserError(
                f"{where}: {key} must be {kind}, got {type(value).__name__} {value!r:.60}"
            )
        low = _MINIMUM.get(key)
        values = value if isinstance(value, list) else [value]
        if low is not None and any(v < low for v in values):
            raise UserError(f"{where}: {key} must be >= {low}, got {value!r:.60}")
        if key in ("seeds", "split_seeds") and any(v > MAX_INT_VALUE for v in value):
            raise UserError(f"{where}: {key} must be <= {MAX_INT_VALUE}, got {value!r:.60}")
        if kind.startswith("a list") and key in ("datasets", "methods", "seeds") and not value:
            raise UserError(f"{where}: {key} is empty")
        fields[key] = tuple(value) if kind.startswith("a list") else value
    if fields["name"] != path.stem:
        raise UserError(f"{where}: name {fields['name']!r} must equal the file name {path.stem!r}")
    csv = fields["paper_csv"]
    # the published table is read from bench/papers/: a bare file name, never a path
    if Path(csv).name != csv or csv in ("", ".", ".."):
        raise UserError(f"{where}: paper_csv {csv!r} must be a file name in {PAPER_DIR}")
    if fields.get("precision", "fp32") not in PRECISIONS:
        raise UserError(f"{where}: precision must be one of {', '.join(PRECISIONS)}")
    if fields.get("split_seeds") and not fields.get("shots"):
        raise UserError(f"{where}: split_seeds choose few-shot samples; they need shots")
    fields.setdefault("img_size", None)  # absent: the backbone's (or the method's) own size
    _split_training(fields, where)
    return Protocol(**fields, path=path)


def _split_training(fields: dict[str, Any], where: str) -> None:
    """[training] into the settings for every method and [training.METHOD] tables; check them,
    [hparams.METHOD], and that every pinned value names its source in [sources]."""
    methods = set(fields["methods"])
    training = dict(fields.pop("training", {}))
    per_method = {k: training.pop(k) for k in list(training) if isinstance(training[k], dict)}
    hparams = fields.get("hparams", {})
    for table, name in ((per_method, "training"), (hparams, "hparams")):
        for method, values in table.items():
            if method not in methods or not isinstance(values, dict):
                raise UserError(
                    f"{where}: [{name}.{method}] must be a table for one of the protocol's "
                    f"methods ({', '.join(sorted(methods))})"
                )
    for scope, values in [("", training), *((f"{m}.", v) for m, v in per_method.items())]:
        for key, value in values.items():
            kind = TRAINING_KEYS.get(key)
            if kind is None:
                raise UserError(
                    f"{where}: [training] key {scope}{key}: valid keys are "
                    f"{', '.join(TRAINING_KEYS)}"
                )
            if not _is(value, kind):
                raise UserError(f"{where}: training {scope}{key} must be {kind}, got {value!r:.60}")
            if kind == "a number":  # 0 and 0.0 must give a cell the same run id
                values[key] = float(value)
    pinned = [*training, *(f"{m}.{k}" for m, v in per_method.items() for k in v)]
    pinned += [f"{m}.{k}" for m, v in hparams.items() for k in v]
    pinned += ["precision"] if "precision" in fields else []
    unsourced = [k for k in pinned if k not in fields.get("sources", {})]
    if unsourced:
        raise UserError(f"{where}: [sources] must say where each value comes from: {unsourced}")
    fields["training"] = training
    fields["method_training"] = per_method


def _is(value: Any, kind: str) -> bool:
    """Whether a TOML value has the kind `_KEYS` names (a bool is not an integer)."""

    def integer(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if kind == "a string":
        return isinstance(value, str)
    if kind == "an integer":
        return integer(value)
    if kind == "a list of strings":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "a list of integers":
        return isinstance(value, list) and all(integer(v) for v in value)
    if kind == "a number":
        return integer(value) or isinstance(value, float)
    if kind == "a table":
        return isinstance(value, dict)
    if kind == "a table of strings":
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    raise AssertionError(kind)


def apply_protocol(protocol: Protocol, req: Any) -> Any:
    """A GridRequest filled with the protocol's grid and budget (the CLI refuses grid options
    given beside --protocol, so nothing here overrides an explicit choice)."""
    from bench.catalog import get_card

    return req.replace(
        methods=list(protocol.methods),
        datasets=list(protocol.datasets),
        seeds=list(protocol.seeds),
        backbone=protocol.backbone,
        img_size=protocol.img_size,
        epochs=protocol.epochs,
        batch_size=protocol.batch_size,
        augment=protocol.augment,
        shots=list(protocol.shots) if protocol.shots else None,
        split_seeds=list(protocol.split_seeds) if protocol.shots else None,
        dataset_lr={
            (name, method): get_card(name).reference_lr
            for name in protocol.datasets
            for method in protocol.dataset_lr_methods
            if get_card(name).reference_lr is not None
        },
        method_train={m: protocol.training_for(m) for m in protocol.methods},
        method_hparams=dict(protocol.hparams),
        # the references ran fp32; an explicit --precision (bf16 to save time) wins
        precision=protocol.precision if req.precision == "auto" else req.precision,
    )
