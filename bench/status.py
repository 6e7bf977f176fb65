"""A grid's progress from its records and claims: done, failed, oom, diverged, running and
missing cells per dataset and method. It only reads: no record, claim or foreign file is ever
written, moved or deleted."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UserError

STATES = ("done", "failed", "oom", "diverged", "running", "missing")
# Which record wins when a cell has several (one per device in an `--device auto` grid).
_RANK = {"ok": 0, "oom": 1, "diverged": 1, "failed": 2}


@dataclass
class CellState:
    """One cell as status sees it."""

    block: str  # dataset, with the shots for a few-shot cell
    method: str
    state: str  # one of STATES
    where: str  # dataset/method/seed, for the lists
    detail: str = ""


@dataclass
class Summary:
    cells: list[CellState]
    # (file, what it is) for every file in the folder not counted as it stands (RecordSet.notes)
    skipped: list[tuple[Path, str]]
    # such files sitting at an expected cell's record path: `bench run` refuses to start
    blocking: dict[Path, str] = field(default_factory=dict)
    stale_claims: int = 0
    grid: bool = False

    def counts(self) -> dict[tuple[str, str], dict[str, int]]:
        """(block, method) -> state -> cells, in the order the cells came."""
        out: dict[tuple[str, str], dict[str, int]] = {}
        for c in self.cells:
            row = out.setdefault((c.block, c.method), dict.fromkeys(STATES, 0))
            row[c.state] += 1
        return out

    def total(self) -> dict[str, int]:
        return {s: sum(c.state == s for c in self.cells) for s in STATES}


def _block(cfg: dict[str, Any]) -> str:
    shots = cfg.get("shots")
    return f"{cfg.get('dataset', '?')}" + (f" {shots}-shot" if shots else "")


def _where(cfg: dict[str, Any]) -> str:
    shots = f" {cfg['shots']}-shot x{cfg.get('split_seed', 0)}" if cfg.get("shots") else ""
    return f"{cfg.get('dataset', '?')}{shots}/{cfg.get('method', '?')}/seed {cfg.get('seed', '?')}"


def _state(record: dict[str, Any]) -> str:
    status = record.get("status")
    # a search trial that trained (or diverged: a score of nothing) is a finished cell
    return "done" if status in ("ok", "trial") else status if status in STATES else "failed"


def _running(claim) -> str:
    info = claim.info or {}
    return (
        f"on {info.get('host', '?')} (pid {info.get('pid', '?')}) since "
        f"{info.get('started_at', '?')}"
    )


def summarise(
    results: Path, grid: list[list[Any]] | None = None, *, stale_after: float | None = None
) -> Summary:
    """The state of every expected cell (`grid`: per cell, the CellConfigs that count as it),
    or, without a grid, of every cell the folder has a record or a claim for."""
    from bench.claims import current_claims
    from bench.records import load_records, record_path
    from bench.report import is_profile, row_name

    loaded = load_records(results)
    records = {r["run_id"]: r for r in loaded.records if not is_profile(r)}
    claims = current_claims(results, stale_after=stale_after)
    live = {run_id: c for run_id, c in claims.items() if c.alive}
    summary = Summary(cells=[], skipped=loaded.notes(), grid=grid is not None)
    summary.stale_claims = sum(not c.alive for c in claims.values())
    if grid is not None:
        # what `bench run` refuses to overwrite: a file that is not a record, or another cell's
        blocked = set(loaded.unreadable) | {path for path, _ in loaded.misplaced}
        for variants in grid:
            cfg = variants[0].to_dict()
            ids = [v.run_id for v in variants]
            for run_id in ids:
                if record_path(results, run_id) in blocked:
                    summary.blocking[record_path(results, run_id)] = _where(cfg)
            claim = next((live[i] for i in ids if i in live), None)
            found = [records[i] for i in ids if i in records]
            if claim is not None:
                cell = CellState(
                    _block(cfg), cfg["method"], "running", _where(cfg), _running(claim)
                )
            elif found:
                best = min(found, key=lambda r: _RANK.get(r.get("status"), 3))
                cell = CellState(
                    _block(cfg), cfg["method"], _state(best), _where(cfg), best.get("error") or ""
                )
            else:
                cell = CellState(_block(cfg), cfg["method"], "missing", _where(cfg))
            summary.cells.append(cell)
        return summary
    for run_id, rec in sorted(records.items(), key=lambda kv: (_block(_cfg(kv[1])), kv[0])):
        cfg = _cfg(rec)
        if run_id in live:
            state, detail = "running", _running(live[run_id])
        else:
            state, detail = _state(rec), rec.get("error") or ""
        summary.cells.append(CellState(_block(cfg), row_name(cfg), state, _where(cfg), detail))
    for run_id, claim in live.items():
        if run_id not in records:
            about = (claim.info or {}).get("cell") or {"dataset": run_id}
            method = str(about.get("method", "?"))
            cell = CellState(_block(about), method, "running", _where(about), _running(claim))
            summary.cells.append(cell)
    return summary


def _cfg(record: dict[str, Any]) -> dict[str, Any]:
    cfg = record.get("config")
    return cfg if isinstance(cfg, dict) else {}


def expected_cells(req, device: str, precision: str) -> list[list[Any]]:
    """The cells `bench run` would run for this request, each with its device variants: under
    `--device auto` a cell counts as run on CPU, a CUDA GPU or MPS, and `--precision auto` on a
    CUDA GPU as bf16 or fp16 (by that GPU's capability), since status often runs on another
    machine (a login node) than the grid did."""
    # Here, not at the top: planning imports the methods (torch), which the rest of status
    # (reading records and claims) does without.
    from bench.grid import dry_plan
    from bench.grid.request import DEVICES
    from bench.precision import possible_precisions

    if device not in DEVICES:
        raise UserError(f"--device {device!r}: expected {', '.join(DEVICES)}")
    settings, errors = [], []
    for d in [d for d in DEVICES if d != "auto"] if device == "auto" else [device]:
        try:
            settings += [(d, p) for p in possible_precisions(precision, d)]
        except UserError as exc:
            errors.append(exc)
    if not settings:
        raise errors[0]
    # Planned once (reading file headers and hashing a --weights file once): device and
    # precision change no other field of a cell, so the other variants are copies.
    cells = dry_plan(req, device=settings[0][0], precision=settings[0][1]).cells
    return [[dataclasses.replace(c, device=d, precision=p) for d, p in settings] for c in cells]
