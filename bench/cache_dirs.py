"""The suite's cache folder ($MEDPEFT_CACHE): demo-vit weights, frozen features, decoded images.
Checked writable before any work that would fill it."""

from __future__ import annotations

import os
from pathlib import Path

from bench.errors import UserError

CACHE_ENV = "MEDPEFT_CACHE"
# A cache's temporary file or folder untouched this long was left by a killed writer (a live
# one is written within seconds, or touched at every batch); younger ones may be in use.
STALE_TEMP_S = 3600.0


def cache_root() -> Path:
    """Where the suite keeps what it builds (demo-vit weights, frozen features, decoded images):
    $MEDPEFT_CACHE, else ~/.cache/medpeft-bench."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medpeft-bench"


def check_cache_writable(*folders: Path) -> None:
    """Create each cache folder (default: the cache root) and write a probe file in it, so that a
    cache that cannot be written fails now with a UserError naming the folder and what to change,
    not with a traceback after minutes of work."""
    import tempfile

    for folder in folders or (cache_root(),):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # an unnamed file where supported, deleted on close: a kill here leaves nothing
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise UserError(
                f"cannot write the cache folder {folder}: {_why_unwritable(folder, exc)}. "
                f"{_cache_advice(folder)}"
            ) from None


def _why_unwritable(folder: Path, exc: OSError) -> str:
    """'X is a file, not a folder' when a file stands in the folder's path, else the OS's reason."""
    blocker = folder
    while not blocker.exists() and blocker != blocker.parent:
        blocker = blocker.parent
    if blocker.exists() and not blocker.is_dir():
        return f"{blocker} is a file, not a folder"
    return exc.strerror or str(exc)


def _cache_advice(folder: Path) -> str:
    root = cache_root()
    if not folder.is_relative_to(root):
        return "Choose a folder you can write"
    if os.environ.get(CACHE_ENV):
        return f"Set {CACHE_ENV} (now {os.environ[CACHE_ENV]}) to a folder you can write"
    return f"Set {CACHE_ENV} to a folder you can write (it is unset, so {root} is used)"
