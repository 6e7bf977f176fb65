"""Resolved run configuration: one `CellConfig` per grid cell, its run id, and `--set` parsing."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.errors import UserError

# Bump when the meaning of a config field changes, so old records stop matching new cells.
CONFIG_VERSION = 2  # 2: few-shot (shots, split_seed) and augmentation joined the cell
# Fields added after version 2 enter the run id only when set away from their default, so every
# record written before they existed keeps its id (and a rerun still skips it).
LATE_DEFAULTS: dict[str, Any] = {
    "compile": False,
    "tuning": None,
    "backbone_dropout": None,
    "head_init": "timm",
    "lr_step": "iteration",
    "decay": "matrices",
    "select": "best",
}
# Method hyperparameters added after records existed, at the value that keeps the old behaviour:
# at that value they stay out of the run id (a method's hparams are part of it), so an old
# results folder still resumes.
LATE_HPARAMS: dict[str, Any] = {"hf_style": False}  # FPT+/FPT: HF-style LPM (reference parity)
_SET_RE = re.compile(r"^(?P<method>[A-Za-z0-9][\w-]*)\.(?P<key>[A-Za-z_]\w*)=(?P<value>.*)$")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class CellConfig:
    """Everything needed to rerun one cell; its hash is the run id."""

    method: str
    dataset: str
    seed: int
    backbone: str
    pretrained: bool
    weights: str | None
    weights_sha256: str | None
    epochs: int
    batch_size: int
    img_size: int
    device: str
    precision: str
    optimizer: str
    lr: float
    weight_decay: float
    warmup_epochs: float
    grad_clip: float
    augment: str = "rrc-flip"
    shots: int | None = None  # None: the full training split
    split_seed: int = 0  # which few-shot sample (or published split file); 0 for full data
    hparams: dict[str, Any] = field(default_factory=dict)
    version: int = CONFIG_VERSION
    compile: bool = False  # torch.compile the forward (a LATE_DEFAULTS field)
    # bench.tuning: {"role": "trial"} for a search trial (validation only, test sealed), or
    # {"role": "final", budget, tune_seed, space} for a selected configuration's run; None for
    # fixed hyperparameters (a LATE_DEFAULTS field)
    tuning: dict[str, Any] | None = None
    # The backbone's dropout on its tokens, attention output and MLP (timm's pos_drop_rate and
    # proj_drop_rate); None: as timm builds it (0 for its ViTs). Only trained modules run it.
    backbone_dropout: float | None = None  # a LATE_DEFAULTS field
    head_init: str = "timm"  # how the fresh head starts (bench.model_init.HEAD_INITS)
    lr_step: str = "iteration"  # when the cosine moves: every "iteration" or every "epoch"
    decay: str = "matrices"  # which tensors weight decay reaches (bench.train.DECAY_RULES)
    select: str = "best"  # which epoch's weights are tested (bench.option_values.SELECT_RULES)

    @property
    def role(self) -> str | None:
        """'trial' or 'final' for a tuning cell, None otherwise."""
        return (self.tuning or {}).get("role")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def run_id(self) -> str:
        # The weights path is left out: the file's hash identifies the weights wherever they live.
        identity = {k: v for k, v in identity_fields(self.to_dict()).items() if k != "weights"}
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
        shots = f"-{self.shots}shot-x{self.split_seed}" if self.shots is not None else ""
        return f"{self.dataset}{shots}-{self.method}-s{self.seed}-{digest}"


def identity_fields(config: dict[str, Any]) -> dict[str, Any]:
    """A cell's fields (a record's `config`) without the late fields and hyperparameters that
    hold their old-behaviour value: what a cell written before they existed also had."""

    def late(value: Any, default: Any) -> bool:
        return type(value) is type(default) and value == default

    out = {
        k: v for k, v in config.items() if not (k in LATE_DEFAULTS and late(v, LATE_DEFAULTS[k]))
    }
    if isinstance(out.get("hparams"), dict):
        out["hparams"] = {
            k: v
            for k, v in out["hparams"].items()
            if not (k in LATE_HPARAMS and late(v, LATE_HPARAMS[k]))
        }
    return out


def parse_sets(items: list[str]) -> dict[str, dict[str, str]]:
    """Parse `--set method.key=value` items into {method: {key: raw value}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        m = _SET_RE.match(item.strip())
        if not m or not m["value"]:
            raise UserError(
                f"malformed --set {_quote(item)}: expected METHOD.KEY=VALUE, e.g. "
                "--set linear.lr=0.01"
            )
        out.setdefault(m["method"], {})[m["key"]] = m["value"]
    return out


def coerce(raw: str, default: Any, *, what: str) -> Any:
    """Convert a `--set` string to the type of the default it overrides (never `eval`)."""
    try:
        if isinstance(default, bool):
            low = raw.lower()
            if low in _TRUE | _FALSE:
                return low in _TRUE
            raise ValueError
        if isinstance(default, int):
            return _int(raw)
        if isinstance(default, float):
            return _finite(_float(raw), raw, what)
        if isinstance(default, (list, tuple)):
            kind = type(default[0]) if default else str
            return type(default)(coerce(v, kind(), what=what) for v in raw.split(","))
        if default is None:
            for cast in (_int, _float):
                try:
                    return _finite(cast(raw), raw, what)
                except ValueError:
                    pass
            return None if raw.lower() == "none" else raw
        return raw
    except ValueError:
        kind = type(default).__name__
        raise UserError(f"{what}={_quote(raw)}: expected a value of type {kind}") from None


# ASCII only, as --seeds reads integers: int() and float() would also take '1_000' and other
# scripts' digits ('٣'), which no config file or paper writes.
_INT = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)
_FLOAT = re.compile(
    r"\s*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?|nan|inf|infinity)\s*",
    re.ASCII | re.IGNORECASE,
)


def _int(raw: str) -> int:
    if not _INT.fullmatch(raw):
        raise ValueError(raw)
    return int(raw)


def _float(raw: str) -> float:
    if not _FLOAT.fullmatch(raw):
        raise ValueError(raw)
    return float(raw)


def _finite(value: int | float, raw: str, what: str) -> int | float:
    # float() takes 'nan', 'inf' and '1e999': none of them is a learning rate or a decay
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{what}={_quote(raw)}: expected a finite number")
    return value


def _quote(text: str, limit: int = 60) -> str:
    """repr() of user text for a message, cut short: a pasted blob must not flood the terminal."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} chars)"


# More values than any grid runs: a typo such as '0-1000000' must fail here, not fill memory.
MAX_LIST_VALUES = 10_000
# np.random.seed (and so every training seed) takes 0..2**32-1.
MAX_INT_VALUE = 2**32 - 1
_INT_PART = re.compile(r"(?P<lo>-?[0-9]+)(?:-(?P<hi>[0-9]+))?", re.ASCII)


def parse_int_list(
    text: str, *, option: str, minimum: int = 0, maximum: int = MAX_INT_VALUE
) -> list[int]:
    """Parse '0,1,2' or '0-4' into a sorted list of distinct integers in [minimum, maximum]."""
    values: set[int] = set()
    for part in text.split(","):
        # ASCII digits only: int() would also take '1_000', '+3' and other scripts' digits
        m = _INT_PART.fullmatch(part.strip())
        if m is None:
            raise UserError(f"{option} {_quote(text)}: expected integers like '0,1,2' or '0-4'")
        lo = _bounded_int(m["lo"], minimum, maximum)
        hi = lo if m["hi"] is None else _bounded_int(m["hi"], minimum, maximum)
        if hi < lo:
            raise UserError(
                f"{option} {_quote(text)}: range {part.strip()!r} runs backwards; write it "
                f"low-high, e.g. '{hi}-{lo}'"
            )
        if lo < minimum or hi > maximum:
            raise UserError(
                f"{option} {_quote(text)}: every value must be an integer from {minimum} to "
                f"{maximum}"
            )
        # checked before the range is expanded, so a huge range never reaches memory
        if hi - lo + 1 > MAX_LIST_VALUES or len(values | set(range(lo, hi + 1))) > MAX_LIST_VALUES:
            raise UserError(
                f"{option} {_quote(text)}: more than {MAX_LIST_VALUES:,} values; a grid that "
                "large is a typo, or split it into several runs"
            )
        values.update(range(lo, hi + 1))
    return sorted(values)


def _bounded_int(digits: str, minimum: int, maximum: int) -> int:
    """int(digits), or a value just out of [minimum, maximum] when it has more digits than
    either bound (so thousands of digits are never converted)."""
    if len(digits.lstrip("-").lstrip("0")) > len(str(max(abs(minimum), abs(maximum)))):
        return minimum - 1 if digits.startswith("-") else maximum + 1
    return int(digits)


# Longer than any method, dataset or backbone name: a pasted blob is refused before any lookup.
MAX_NAME_LENGTH = 200


def parse_name_list(text: str) -> list[str]:
    """Split a comma-separated list of names, dropping blanks and duplicates, keeping order."""
    seen: dict[str, None] = {}
    for part in text.split(","):
        if part.strip():
            seen[part.strip()] = None
    long = [name for name in seen if len(name) > MAX_NAME_LENGTH]
    if long:
        raise UserError(
            f"name {_quote(long[0], 40)} is longer than {MAX_NAME_LENGTH} characters; "
            "`bench list` shows the names"
        )
    return list(seen)
