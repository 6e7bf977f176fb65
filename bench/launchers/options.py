"""How `bench run` runs its cells (--launcher and its options), checked before anything runs."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.option_values import CLUSTERS, LAUNCHERS

# --slurm-config keys -> (type, CLI option); the CLI wins over the file
SLURM_KEYS: dict[str, tuple[type, str]] = {
    "partition": (str, "--partition"),
    "time": (int, "--time"),
    "gpus_per_job": (int, "--gpus-per-job"),
    "max_concurrent": (int, "--max-concurrent"),
    "cluster": (str, "--slurm-cluster"),
}
# --slurm-config keys with no CLI option -> (type, submitit's AutoExecutor parameter). The
# slurm_ prefix makes submitit's local cluster ignore them, as they mean nothing there.
SBATCH_KEYS: dict[str, tuple[type, str]] = {
    "account": (str, "slurm_account"),
    "qos": (str, "slurm_qos"),
    "mem": (str, "slurm_mem"),  # Slurm's syntax: 64G, 500M
    "mem_gb": (float, "slurm_mem_gb"),
    "cpus_per_task": (int, "slurm_cpus_per_task"),
    "constraint": (str, "slurm_constraint"),
    "exclude": (str, "slurm_exclude"),
    "nodelist": (str, "slurm_nodelist"),
    "setup": (list, "slurm_setup"),  # shell lines run in the job before the cell
    "additional": (dict, "slurm_additional_parameters"),  # any other sbatch option
}
# sbatch options the jobs need as submitit and bench set them (logs, array, requeue signal)
_RESERVED_SBATCH = {"array", "output", "error", "signal", "open_mode", "job_name", "nodes",
                    "ntasks_per_node", "gpus_per_node", "partition", "time"}  # fmt: skip
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", list: "a list of strings",
               dict: "a table"}  # fmt: skip
_MEM = re.compile(r"^[0-9]+([KMGT]B?)?$", re.IGNORECASE)
_SBATCH_OPTION = re.compile(r"^[a-z][a-z0-9_-]*$")
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
    # the --slurm-config keys of SBATCH_KEYS, under submitit's parameter names
    sbatch: dict[str, Any] = field(default_factory=dict)

    @property
    def runs_here(self) -> bool:
        """The cells run on this machine (Slurm jobs run elsewhere, unless its cluster is local)."""
        return self.kind != "slurm" or self.cluster == "local"


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
    if device == "mps":  # Slurm nodes are Linux machines: Apple's MPS is never there
        raise UserError("--launcher slurm with --device mps: use --device cuda, cpu or auto")
    cli = {"partition": partition, "time": time_min, "gpus_per_job": gpus_per_job,
           "max_concurrent": max_concurrent, "cluster": slurm_cluster}  # fmt: skip
    config = _read_slurm_config(slurm_config) if slurm_config else {}
    merged = {**config, **{k: v for k, v in cli.items() if v is not None}}
    opts = LaunchOptions(
        kind="slurm",
        partition=merged.get("partition"),
        time_min=merged.get("time", DEFAULT_TIME_MIN),
        # a CPU grid asks for no GPU unless told
        gpus_per_job=merged.get("gpus_per_job", 0 if device == "cpu" else 1),
        max_concurrent=merged.get("max_concurrent"),
        cluster=merged.get("cluster", "slurm"),
        wait=wait,
        sbatch={SBATCH_KEYS[k][1]: v for k, v in config.items() if k in SBATCH_KEYS},
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
    if device in ("cpu", "mps"):  # --gpus names CUDA GPUs
        raise UserError(
            f"--gpus with --device {device}: drop --gpus, or use --device cuda (or auto)"
        )
    ids = [g.strip() for g in gpus.split(",")]
    if not all(_GPU_ID.match(g) for g in ids):
        raise UserError(f"--gpus {gpus!r}: expected GPU indices (or UUIDs) like 0,1,2,3")
    if len(set(ids)) != len(ids):
        raise UserError(f"--gpus {gpus!r}: a GPU is listed twice")
    return ids


def _read_slurm_config(path: Path) -> dict[str, Any]:
    """The TOML keys of SLURM_KEYS and SBATCH_KEYS, checked; anything else is refused with the
    valid keys, so a misspelt key fails instead of being dropped."""
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
    where = f"--slurm-config {path}"
    for key, value in raw.items():
        if key in SLURM_KEYS:
            kind = SLURM_KEYS[key][0]
        elif key in SBATCH_KEYS:
            kind = SBATCH_KEYS[key][0]
        else:
            valid = ", ".join([*SLURM_KEYS, *SBATCH_KEYS])
            raise UserError(f"{where}: unknown key {key!r}; valid: {valid}")
        if not _is_a(value, kind):
            raise UserError(f"{where}: {key} must be {_TYPE_NAMES[kind]}, got {value!r}")
    if "mem" in raw and "mem_gb" in raw:
        raise UserError(f"{where}: mem and mem_gb both given; keep one")
    if "mem" in raw and not _MEM.match(raw["mem"]):
        raise UserError(f"{where}: mem {raw['mem']!r}: expected Slurm's syntax, like 64G or 500M")
    for key in ("mem_gb", "cpus_per_task"):
        if key in raw and raw[key] <= 0:
            raise UserError(f"{where}: {key} must be > 0, got {raw[key]!r}")
    if not all(isinstance(line, str) for line in raw.get("setup", [])):
        raise UserError(
            f"{where}: setup must be a list of strings (shell lines), got {raw['setup']!r}"
        )
    _check_additional(raw.get("additional", {}), where)
    return raw


def _check_additional(table: dict[str, Any], where: str) -> None:
    """[additional]: sbatch options submitit has no name for, written as `--key=value`."""
    for key, value in table.items():
        name = key.replace("-", "_")
        if not _SBATCH_OPTION.match(key):
            raise UserError(f"{where}: additional.{key}: not an sbatch option name")
        if name in SBATCH_KEYS or name in SLURM_KEYS:
            raise UserError(f"{where}: additional.{key}: use the top-level key {name} instead")
        if name in _RESERVED_SBATCH:
            raise UserError(
                f"{where}: additional.{key}: set by bench and submitit for the jobs to run "
                "(their logs, the array, the requeue); it cannot be overridden"
            )
        # True writes a bare flag (--exclusive); false would be written as the text "False"
        if not (value is True or _is_a(value, str) or _is_a(value, int)):
            raise UserError(
                f"{where}: additional.{key} must be a string, an integer or true, got {value!r}"
            )


def _is_a(value: Any, kind: type) -> bool:
    """TOML's value of `kind`: a bool is no number, an integer is a float."""
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if kind is float else kind)
