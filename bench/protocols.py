"""Paper protocols: a paper's grid as a data file (`bench/protocols/*.toml`), expanded by
`bench run --protocol NAME`, and its published table (`bench/papers/*.csv`) set beside the
reproduced numbers by `bench report --paper NAME`.

A protocol file says where each setting comes from and, where the reference code and the paper
disagree, which one it follows and why; this module only reads it.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
PROTOCOL_DIR = HERE / "protocols"
PAPER_DIR = HERE / "papers"
ALL_DATASETS = "*"  # a paper column that averages over every dataset of the protocol


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
    path: Path | None = None


def list_protocols() -> list[str]:
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.toml"))


def get_protocol(name: str) -> Protocol:
    path = PROTOCOL_DIR / f"{name}.toml"
    if not path.is_file():
        raise UserError(f"unknown protocol {name!r}; available: {', '.join(list_protocols())}")
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    tuples = ("datasets", "methods", "seeds", "shots", "split_seeds", "dataset_lr_methods")
    fields = {k: tuple(v) if k in tuples else v for k, v in raw.items()}
    try:
        return Protocol(**fields, path=path)
    except TypeError as exc:
        raise UserError(f"protocol file {path}: {exc}") from None


def apply_protocol(protocol: Protocol, req: Any) -> None:
    """Fill a RunRequest with the protocol's grid and budget (the CLI refuses grid options given
    beside --protocol, so nothing here overrides an explicit choice)."""
    from bench.data import get_card

    req.methods = list(protocol.methods)
    req.datasets = list(protocol.datasets)
    req.seeds = list(protocol.seeds)
    req.backbone = protocol.backbone
    req.img_size = protocol.img_size
    req.epochs = protocol.epochs
    req.batch_size = protocol.batch_size
    req.augment = protocol.augment
    req.shots = list(protocol.shots) if protocol.shots else None
    req.split_seeds = list(protocol.split_seeds) if protocol.shots else None
    req.dataset_lr = {
        (name, method): get_card(name).reference_lr
        for name in protocol.datasets
        for method in protocol.dataset_lr_methods
        if get_card(name).reference_lr is not None
    }


# ------------------------------------------------------------------------------ paper tables


def published(protocol: Protocol):
    """The paper's numbers as a frame (paper method, dataset, shots, metric, value)."""
    import pandas as pd

    path = PAPER_DIR / protocol.paper_csv
    text = "".join(line for line in path.open(encoding="utf-8") if not line.startswith("#"))
    frame = pd.read_csv(io.StringIO(text), dtype={"shots": str})
    if "shots" not in frame:
        frame["shots"] = ""
    return frame


def source_lines(protocol: Protocol) -> list[str]:
    """The CSV's `#` header: where the published numbers come from."""
    path = PAPER_DIR / protocol.paper_csv
    return [line[1:].strip() for line in path.open(encoding="utf-8") if line.startswith("#")]


def paper_table(protocol: Protocol, long):
    """The paper's table layout: one row per paper method, for every published column the
    published value, the reproduced mean (percent, over seeds and split seeds of ok runs on the
    protocol's backbone) and the difference; `not run` where no record matches."""
    import pandas as pd

    pub = published(protocol)
    pub = pub[pub["method"].isin(protocol.paper_methods)]
    mine = protocol_records(protocol, long)
    ok = mine[mine["status"] == "ok"] if len(mine) else mine
    rows = []
    for method, part in pub.groupby("method", sort=False):
        ours = protocol.paper_methods[method]
        row: dict[str, Any] = {"method": method, "ours": ours}
        for rec in part.itertuples(index=False):
            column = f"{rec.dataset} {rec.shots}".strip()
            value = _reproduced(protocol, ok, ours, str(rec.dataset), str(rec.shots))
            row[f"{column} paper"] = float(rec.value)
            row[f"{column} ours"] = value
            row[f"{column} diff"] = value - float(rec.value) if value == value else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


# The long frame's columns a protocol fixes, beside its grid (methods, datasets, shots, seeds).
_SETTINGS = ("backbone", "img_size", "epochs", "batch_size", "augment")


def protocol_records(protocol: Protocol, long):
    """The rows of the long frame run under the protocol's settings (backbone, input size,
    epochs, batch size, augmentation) on its datasets and methods: only these may stand beside
    the paper's numbers."""
    if not len(long):
        return long
    keep = long["dataset"].isin(protocol.datasets) & long["method"].isin(protocol.methods)
    for name in _SETTINGS:
        wanted = getattr(protocol, name)
        if wanted is not None and name in long:
            keep &= long[name] == wanted
    return long[keep]


def _reproduced(protocol: Protocol, ok, method: str, dataset: str, shots: str) -> float:
    """Mean reproduced score (percent) for one published cell; NaN when nothing matches."""
    if not len(ok):
        return float("nan")
    mine = ok[ok["method"] == method]
    target = protocol.paper_datasets.get(dataset)
    if target is None:  # an average column ("MedFMC-average(9 tasks)", "Average")
        target = ALL_DATASETS
    if target != ALL_DATASETS:
        mine = mine[mine["dataset"] == target]
    if shots.isdigit():
        mine = mine[mine["shots"] == int(shots)]
    elif protocol.shots:
        mine = mine[mine["shots"].isin(protocol.shots)]
    if not len(mine):
        return float("nan")
    # average of block means, so a block with more seeds does not weigh more
    blocks = mine.groupby(["dataset", "shots"], dropna=False)["primary"].mean()
    expected = _expected_blocks(protocol, target, shots)
    if len(blocks) < expected:
        return float("nan")  # an average over a partial grid would not be the paper's number
    return float(blocks.mean() * 100)


def _expected_blocks(protocol: Protocol, target: str, shots: str) -> int:
    n_datasets = len(protocol.datasets) if target == ALL_DATASETS else 1
    n_shots = 1 if shots.isdigit() or not protocol.shots else len(protocol.shots)
    return n_datasets * n_shots
