"""How `bench run` runs its cells (--launcher and its options), checked before anything runs."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import UserError

LAUNCHERS = ("local", "subprocess", "slurm")
CLUSTERS = ("slurm", "local")  # local: submitit runs the jobs as processes here (tests, laptops)
# --slurm-config keys -> (type, CLI option); the CLI wins over the file
SLURM_KEYS: dict[str, tuple[type, str]] = {
    "partition": (str, "--partition"),
    "time": (int, "--time"),
    "gpus_per_job": (int, "--gpus-per-job"),
    "max_concurrent": (int, "--max-concurrent"),
    "cluster": (str, "--slurm-cluster"),
}
DEFAULT_TIME_MIN = 60
_GPU_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_:.-]*$")  # an index, GPU-/MIG- UUID


@dataclass
class LaunchOptions:
    """How `bench run` runs its cells, checked before anything runs."""

    kind: str = "local"
    gpus: list[str] | None = None
    partition: str | None = None
    time_min: int = DEFAULT_TIME_MIN
    gpus_per_job: int = 1
    max_concurrent: int | None = None
    cluster: str = "slurm"
    wait: bool = False


def launch_options(
    launcher: str,
    *,
    device: str = "auto",
    gpus: str | None = None,
    partition: str | None = None,
    time_min: int | None = None,
    gpus_per_job: int | None = None,
    max_concurrent: int | None = None,
    slurm_config: Path | None = None,
    slurm_cluster: str | None = None,
    wait: bool = False,
) -> LaunchOptions:
    """Check the launcher options together; a bad combination is one UserError line."""
    if launcher not in LAUNCHERS:
        raise UserError(f"--launcher {launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    if gpus is not None and launcher != "subprocess":
        raise UserError(
            "--gpus needs --launcher subprocess (one cell per GPU on this machine); Slurm jobs "
            "get theirs with --gpus-per-job"
        )
    slurm_only = {
        "--partition": partition is not None,
        "--time": time_min is not None,
        "--gpus-per-job": gpus_per_job is not None,
        "--max-concurrent": max_concurrent is not None,
        "--slurm-config": slurm_config is not None,
        "--slurm-cluster": slurm_cluster is not None,
        "--wait": wait,
    }
    given = [flag for flag, present in slurm_only.items() if present]
    if given and launcher != "slurm":
        raise UserError(f"{given[0]} is a Slurm option; it needs --launcher slurm")
    if launcher == "subprocess":
        return LaunchOptions(kind="subprocess", gpus=_parse_gpus(gpus, device))
    if launcher == "local":
        return LaunchOptions()
    cli = {"partition": partition, "time": time_min, "gpus_per_job": gpus_per_job,
           "max_concurrent": max_concurrent, "cluster": slurm_cluster}  # fmt: skip
    merged = {**(_read_slurm_config(slurm_config) if slurm_config else {}),
              **{k: v for k, v in cli.items() if v is not None}}  # fmt: skip
    opts = LaunchOptions(
        kind="slurm",
        partition=merged.get("partition"),
        time_min=merged.get("time", DEFAULT_TIME_MIN),
        # a CPU grid asks for no GPU unless told
        gpus_per_job=merged.get("gpus_per_job", 0 if device == "cpu" else 1),
        max_concurrent=merged.get("max_concurrent"),
        cluster=merged.get("cluster", "slurm"),
        wait=wait,
    )
    if opts.time_min < 1:
        raise UserError(f"--time must be >= 1 (minutes), got {opts.time_min}")
    if opts.gpus_per_job < 0:
        raise UserError(f"--gpus-per-job must be >= 0, got {opts.gpus_per_job}")
    if opts.max_concurrent is not None and opts.max_concurrent < 1:
        raise UserError(f"--max-concurrent must be >= 1, got {opts.max_concurrent}")
    if opts.cluster not in CLUSTERS:
        raise UserError(f"--slurm-cluster {opts.cluster!r}: expected slurm or local")
    if device == "cpu" and opts.gpus_per_job > 0:
        raise UserError(
            f"--gpus-per-job {opts.gpus_per_job} with --device cpu: the GPUs would sit idle; "
            "drop one of them"
        )
    if opts.gpus_per_job == 0 and device == "cuda":
        raise UserError("--device cuda with --gpus-per-job 0: the jobs would have no GPU")
    if opts.cluster == "slurm" and shutil.which("sbatch") is None:
        raise UserError(
            "--launcher slurm: no `sbatch` on this machine; submit from a Slurm login node, or "
            "add --slurm-cluster local to run the jobs here through submitit"
        )
    return opts


def _parse_gpus(gpus: str | None, device: str) -> list[str] | None:
    if gpus is None:
        return None
    if device == "cpu":
        raise UserError("--gpus with --device cpu: drop --gpus, or use --device cuda (or auto)")
    ids = [g.strip() for g in gpus.split(",")]
    if not all(_GPU_ID.match(g) for g in ids):
        raise UserError(f"--gpus {gpus!r}: expected GPU indices (or UUIDs) like 0,1,2,3")
    if len(set(ids)) != len(ids):
        raise UserError(f"--gpus {gpus!r}: a GPU is listed twice")
    return ids


def _read_slurm_config(path: Path) -> dict[str, Any]:
    """The TOML keys of SLURM_KEYS; anything else is refused with the valid keys."""
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover (Python 3.10)
        import tomli as tomllib

    if not path.is_file():
        raise UserError(f"--slurm-config {path}: no such file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"--slurm-config {path}: not readable TOML ({exc})") from None
    for key, value in raw.items():
        if key not in SLURM_KEYS:
            raise UserError(
                f"--slurm-config {path}: unknown key {key!r}; valid: {', '.join(SLURM_KEYS)}"
            )
        kind, _ = SLURM_KEYS[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserError(
                f"--slurm-config {path}: {key} must be a{'n' if kind is int else ''} "
                f"{kind.__name__}, got {value!r}"
            )
    return raw
