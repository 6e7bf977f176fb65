"""The run environment a record stores: software versions, git state, CPU and GPUs, host."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

import bench


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git(directory: Path, *args: str) -> str | None:
    # GIT_OPTIONAL_LOCKS=0: `git status` must not take index.lock while others use the checkout.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        proc = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _git_info(directory: Path) -> tuple[str | None, bool | None]:
    inside = _git(directory, "rev-parse", "--is-inside-work-tree")
    if inside is None or inside.strip() != "true":
        return None, None
    head = _git(directory, "rev-parse", "HEAD")  # None in a repository without commits
    status = _git(directory, "status", "--porcelain")
    sha = head.strip() if head else None
    dirty = None if status is None else bool(status.strip())
    return sha, dirty


def environment(repo: Path | None = None) -> dict[str, Any]:
    """Software/hardware description for a result record.

    Git fields describe ``repo`` or, by default, the checkout containing the ``bench``
    package; they are None outside a git work tree.
    """
    directory = Path(repo) if repo is not None else Path(bench.__file__).resolve().parent
    sha, dirty = _git_info(directory)

    cuda_ok = torch.cuda.is_available()
    cpu_model = _cpu_model()
    if cuda_ok:
        device_names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        device_names = [cpu_model or "cpu"]
    try:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:
        cudnn = None

    return {
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),  # which runner wrote the record (shared folders, launchers)
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "torch_version": _dist_version("torch"),
        "timm_version": _dist_version("timm"),
        "peft_version": _dist_version("peft"),
        "numpy_version": _dist_version("numpy"),
        "sklearn_version": _dist_version("scikit-learn"),
        "torch_cuda_version": torch.version.cuda,
        "cudnn_version": cudnn,
        "cuda_available": cuda_ok,
        "device_names": device_names,
        "torch_num_threads": torch.get_num_threads(),
        "git_sha": sha,
        "git_dirty": dirty,
        "medpeft_bench_version": getattr(bench, "__version__", None),
    }
