"""One run's record as a typed value: its parts, its JSON form, and what makes one readable."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any, TypedDict

from bench.record_cost import Cost, GpuProcess
from bench.record_types import wrong_types

SCHEMA = 1


class Absent(enum.Enum):
    """A key the record does not hold, as distinct from a key holding null."""

    ABSENT = enum.auto()


ABSENT = Absent.ABSENT


# ----------------------------------------------------------------------- parts (JSON objects)


class _DatasetLater(TypedDict, total=False):
    # split -> images per class (positives per label, multi-label): bench.uncertainty's input
    class_counts: dict[str, list[int]]


class DatasetEntry(_DatasetLater):
    name: str
    task: str
    num_classes: int
    classes: list[str]
    primary_metric: str
    sizes: dict[str, int]  # split -> images
    fingerprint: str
    synthetic: bool
    protocol: dict[str, Any]  # carved val, few-shot sample: enough to audit and rerun


class _BackboneLater(TypedDict, total=False):
    architecture: str  # the timm architecture the name stands for (a hub config.json's)


class BackboneEntry(_BackboneLater):
    name: str  # as given: a timm name, hf-hub:ORG/NAME or demo-vit
    pretrained: bool
    weights: str | None
    weights_sha256: str | None


class Params(TypedDict, total=False):
    """bench.measure.param_report; percentages are of the backbone without its head."""

    backbone_params: int
    head_params: int
    total_params: int
    trainable_params: int
    trainable_params_no_head: int
    trainable_pct: float
    trainable_pct_no_head: float
    paper_trainable_pct: float  # the method paper's own formula, when it states one


class FeatureCacheSplit(TypedDict):
    path: str
    images: int
    hit: bool
    bytes: int
    seconds: float
    rebuilt_because: str | None


class FeatureCache(TypedDict, total=False):
    """`feature_cache`: whether frozen features came from the cache, and why not."""

    used: bool
    reason: str
    dtype: str
    splits: dict[str, FeatureCacheSplit]
    bytes: int
    hit: bool
    seconds: float


class Trial(TypedDict):
    """A search trial's result (bench.harness.trial_result)."""

    outcome: str  # ok, diverged or oom
    metric: str
    val_primary: float | None
    higher_is_better: bool


class Calibration(TypedDict):
    """The test split's reliability diagram (bench.metrics.reliability_bins)."""

    n_bins: int
    count: list[int]
    confidence: list[float | None]
    accuracy: list[float | None]


class Metrics(TypedDict, total=False):
    primary_metric: str
    primary: float | None  # None for a trial: it is never tested
    test: dict[str, float | None]
    val: dict[str, float | None]  # at the selected epoch
    calibration: Calibration


class Epoch(TypedDict):
    epoch: int
    train_loss: float
    val: dict[str, float | None]


class GradScalerNote(TypedDict):
    """fp16's loss scaler over a training run (bench.precision)."""

    skipped_steps: int  # steps skipped on overflowing gradients
    loss_scale: float  # its scale at the end


class _SelectionLater(TypedDict, total=False):
    smoothed: list[float]  # `smooth` only: the trailing means it compared


class Selection(_SelectionLater):
    """Which epoch's weights were tested, by the rule declared before training (bench.selection)."""

    rule: str  # bench.option_values.SELECT_RULES
    metric: str  # the primary metric the rule read
    epoch: int
    val: float | None  # the validation score at that epoch
    curve: list[float]  # the validation curve it selected on


class Training(TypedDict, total=False):
    augment_applied: str
    best_epoch: int
    selection: Selection  # records before selection rules lack it (they used `best`)
    epochs: int
    steps: int
    history: list[Epoch]
    batch_size_used: int  # after --oom-retry halved the batch
    grad_scaler: GradScalerNote  # fp16 only


class Env(TypedDict, total=False):
    """bench.measure.environment, plus the launcher that ran the cell."""

    python_version: str
    platform: str
    hostname: str
    pid: int
    cpu_count: int | None
    cpu_model: str | None
    torch_version: str | None
    timm_version: str | None
    peft_version: str | None
    numpy_version: str | None
    sklearn_version: str | None
    torch_cuda_version: str | None
    cudnn_version: int | None
    cuda_available: bool
    device_names: list[str]
    torch_num_threads: int
    git_sha: str | None
    git_dirty: bool | None
    medpeft_bench_version: str | None
    launcher: dict[str, Any]  # which launcher ran the cell: kind, gpu or job_id


class LrNote(TypedDict):
    """How the learning rate came about (bench.grid.lr_note)."""

    effective: float
    rule: Any  # the scaling rule's description, None without one
    base: float | None
    batch_size: int


class Hyperparameters(TypedDict, total=False):
    regime: str  # fixed, trial or tuned
    source: str
    searched: dict[str, Any]
    lr: LrNote


class Tuning(TypedDict, total=False):
    """A tuned final's search (bench.tuning.final_annotation)."""

    budget: int
    tune_seed: int
    mode: str
    space: dict[str, Any]
    selected_by: str
    tie_rule: str
    selected: int
    trials: list[dict[str, Any]]  # run_id, config, outcome, val_primary (epochs: last rung)
    scheduler: dict[str, Any]  # name, eta, rungs: [{epochs, trials, val_primary}]


class PredictionsEntry(TypedDict, total=False):
    """`predictions`: the finished cell's `<run id>.predictions.npz` beside it (bench.predictions);
    `file` null and `error` when it could not be written. Records before it have no entry."""

    file: str | None
    splits: dict[str, int]  # split -> images
    sha256: str
    error: str


class ArtefactsEntry(TypedDict, total=False):
    """`artefacts`: a finished cell's trained tensors beside it (bench.artefacts); `trainable`
    null and `reason` (--no-artefacts) or `error` when none were saved. Trials, failed cells and
    records before it have no entry."""

    trainable: dict[str, Any] | None  # `<run id>.trainable.safetensors`: file, bytes, sha256
    tensors: int  # how many tensors it holds
    params: int  # their scalar count: params.trainable_params
    frozen: str  # "pretrained" (a weights file or the hub) or "seeded-init" (--no-pretrained)
    # peft methods: {folder: `<run id>.adapter`, files: [{file, bytes, sha256}]}; null with
    # `adapter_error`
    adapter: dict[str, Any] | None
    adapter_error: str
    reason: str
    error: str


# ----------------------------------------------------------------------- the record


class UnreadableRecord(ValueError):
    """JSON that is not a record this version reads; the message says why."""


@dataclass(kw_only=True)
class Record:
    """A record as the harness, runner, tuner and profiler write it. Fields in the order a grid
    cell's file lists them; ABSENT for a key the record does not hold. A `bench profile` record
    (kind "profile") holds `profile` instead of `config` and the training parts."""

    schema: int = SCHEMA
    kind: str | Absent | None = ABSENT  # "profile" for `bench profile`; absent for a grid cell
    run_id: str
    status: str | None  # None only while the harness builds it
    error: str | Absent | None = ABSENT
    profile: dict[str, Any] | Absent = ABSENT  # bench.profiling.profile_method's figures
    demo: bool | Absent = ABSENT  # synthetic data or demo weights: not a result
    notice: str | Absent | None = ABSENT
    # bench.config.CellConfig.to_dict(), the cell; records from before a late field lack it
    config: dict[str, Any] | Absent = ABSENT
    dataset: DatasetEntry | Absent | None = ABSENT
    backbone: BackboneEntry | Absent = ABSENT
    started_at: str | Absent = ABSENT  # ISO 8601, UTC
    gpu_other_processes: list[GpuProcess] | Absent | None = ABSENT  # None: no NVML to ask
    params: Params | Absent | None = ABSENT
    method_info: dict[str, Any] | Absent = ABSENT  # the method's describe()
    normalization: dict[str, list[float]] | Absent = ABSENT  # mean, std of the backbone
    # bench.transforms.Preprocess.describe(): size, normalisation, eval resize and crop, preset
    preprocess: dict[str, Any] | Absent = ABSENT
    feature_cache: FeatureCache | Absent = ABSENT
    trial: Trial | Absent | None = ABSENT
    metrics: Metrics | Absent | None = ABSENT
    training: Training | Absent = ABSENT
    cost: Cost | Absent | None = ABSENT
    diverged_step: int | Absent = ABSENT
    traceback: str | Absent = ABSENT  # a failed cell's
    env: Env | Absent = ABSENT
    finished_at: str | Absent | None = ABSENT
    oom_retries: list[int] | Absent = ABSENT  # batch sizes tried, with --oom-retry
    hyperparameters: Hyperparameters | Absent = ABSENT
    # what --precision asked for and why config.precision (the resolved one) was chosen
    precision_requested: str | Absent = ABSENT
    precision_reason: str | Absent = ABSENT
    tuning: Tuning | Absent | None = ABSENT
    predictions: PredictionsEntry | Absent = ABSENT  # an ok cell's, from bench.records.save_record
    artefacts: ArtefactsEntry | Absent = ABSENT  # an ok (non-trial) cell's, from save_record
    # Keys this version does not know (a newer or older writer's): kept and written back as read.
    extra: dict[str, Any] = field(default_factory=dict)
    # The key order of the JSON it was read from, so writing it back changes nothing.
    _order: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The record as its file holds it (nested parts are shared, not copied)."""
        present = {f.name: getattr(self, f.name) for f in fields(self) if f.name in _FIELDS}
        present = {k: v for k, v in present.items() if v is not ABSENT} | self.extra
        order = [k for k in self._order if k in present]
        return {k: present[k] for k in [*order, *(k for k in present if k not in order)]}

    @classmethod
    def from_json(cls, data: Any) -> Record:
        """A record from its JSON; UnreadableRecord when `bench report` could not read it."""
        if not is_record(data):
            raise UnreadableRecord(f"not a medpeft-bench record of schema {SCHEMA}")
        problem = wrong_types(data)
        if problem is not None:
            raise UnreadableRecord(problem)
        known = {k: v for k, v in data.items() if k in _FIELDS}
        record = cls(**known, extra={k: v for k, v in data.items() if k not in _FIELDS})
        record._order = tuple(data)
        return record


_FIELDS = frozenset(f.name for f in fields(Record) if f.init and f.name != "extra")


# ----------------------------------------------------------------------- reading rules


def is_record(data: Any) -> bool:
    """Whether JSON claims to be a record of this schema (an object with a run id)."""
    return isinstance(data, dict) and data.get("schema") == SCHEMA and "run_id" in data
