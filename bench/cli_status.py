"""`bench status`: a grid's progress from its records and claims: done, failed, oom, diverged,
running and missing cells per dataset and method. It only reads: no record, claim or foreign
file is ever written, moved or deleted."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.cli_common import console as _console
from bench.cli_common import fail as _fail
from bench.cli_common import grid_request

STATES = ("done", "failed", "oom", "diverged", "running", "missing")
# Which record wins when a cell has several (one per device in an `--device auto` grid).
_RANK = {"ok": 0, "oom": 1, "diverged": 1, "failed": 2}
# Options that do not choose a grid: with only these, status summarises the folder.
_NOT_GRID = {"results", "data_root"}
_SHOWN = 10  # lines per list before "... and N more"
_LISTED = {"running": "cyan", "failed": "red", "oom": "red", "diverged": "red"}


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
    `--device auto` a cell counts as run on either CPU or GPU, since status often runs on another
    machine (a login node) than the grid did."""
    from bench.errors import UserError
    from bench.grid import dry_plan, resolve_precision
    from bench.grid.request import DEVICES

    if device not in DEVICES:
        raise UserError(f"--device {device!r}: expected auto, cpu or cuda")
    settings, errors = [], []
    for d in ["cpu", "cuda"] if device == "auto" else [device]:
        try:
            settings.append((d, resolve_precision(precision, d)))
        except UserError as exc:
            errors.append(exc)
    if not settings:
        raise errors[0]
    variants = [dry_plan(req, device=d, precision=p).cells for d, p in settings]
    return [list(cells) for cells in zip(*variants, strict=True)]


def status(
    ctx: typer.Context,
    results: Annotated[Path, typer.Option(help="Folder of JSON records.")] = Path("results"),
    methods: Annotated[
        str, typer.Option(help="Comma-separated methods, as for `bench run`.")
    ] = "core",
    datasets: Annotated[str, typer.Option(help="Comma-separated datasets.")] = "demo",
    seeds: Annotated[str, typer.Option(help="Training seeds: '0,1,2' or '0-4'.")] = "0",
    shots: Annotated[str | None, typer.Option(help="Few-shot K per class, e.g. 1,5,10.")] = None,
    split_seeds: Annotated[
        str | None, typer.Option(help="Few-shot samples: '0-4' (default 0).")
    ] = None,
    augment: Annotated[str, typer.Option(help="Training augmentation preset.")] = "rrc-flip",
    backbone: Annotated[str, typer.Option(help="A timm ViT name, or 'demo-vit'.")] = "demo-vit",
    weights: Annotated[Path | None, typer.Option(help="Local pretrained weights.")] = None,
    no_pretrained: Annotated[
        bool, typer.Option("--no-pretrained", help="The random-init grid.")
    ] = False,
    epochs: Annotated[int | None, typer.Option(help="Epochs per cell.")] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 32,
    lr: Annotated[float | None, typer.Option(help="Learning rate for every method.")] = None,
    img_size: Annotated[int | None, typer.Option(help="Input size for every method.")] = None,
    device: Annotated[
        str,
        typer.Option(help="auto (a cell run on CPU or GPU counts), cpu or cuda."),
    ] = "auto",
    precision: Annotated[str, typer.Option(help="auto, bf16 or fp32.")] = "auto",
    compile_: Annotated[bool, typer.Option("--compile", help="The torch.compile grid.")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="METHOD.KEY=VALUE (repeatable).")
    ] = None,
    data_root: Annotated[
        Path | None,
        typer.Option(help="Where datasets live (their image size can decide a cell's)."),
    ] = None,
    warmup_epochs: Annotated[float, typer.Option(help="Warm-up epochs.")] = 1.0,
    grad_clip: Annotated[float, typer.Option(help="Gradient-norm clipping threshold.")] = 1.0,
    protocol: Annotated[
        str | None, typer.Option(help="A paper's grid (`bench list protocols`).")
    ] = None,
) -> None:
    """Progress of a grid: done, failed, oom, diverged, running (claimed by a live runner) and
    missing cells per dataset and method. Give the grid as to `bench run` (or --protocol) to
    see what is missing; without grid options, summarise what the folder holds. Files that are
    not records are listed and left untouched."""
    from bench.errors import UserError

    given = {
        name
        for name in ctx.params
        # compared by name: typer may ship its own copy of click's enum
        if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"
    }
    grid = None
    try:
        if given - _NOT_GRID:
            from bench.cli import GRID_OPTIONS  # here: bench.cli imports this module

            req = grid_request(
                methods=methods, datasets=datasets, seeds=seeds, shots=shots,
                split_seeds=split_seeds, set_=set_, no_pretrained=no_pretrained,
                augment=augment, backbone=backbone, weights=weights, epochs=epochs,
                batch_size=batch_size, lr=lr, img_size=img_size, compile=compile_,
                results=results, data_root=data_root, warmup_epochs=warmup_epochs,
                grad_clip=grad_clip,
            )  # fmt: skip
            if protocol is not None:
                from bench.protocols import apply_protocol, get_protocol

                clash = [f"--{n.replace('_', '-')}" for n in GRID_OPTIONS if n in given]
                if clash:
                    raise UserError(f"--protocol {protocol} sets the grid; drop {', '.join(clash)}")
                req = apply_protocol(get_protocol(protocol), req)
            grid = expected_cells(req, device, precision)
        elif not results.is_dir():
            raise UserError(
                f"no results folder {results}; pass --results, or the grid's options to see "
                "what it is missing"
            )
        summary = summarise(results, grid)
    except UserError as exc:
        _fail(str(exc))
    _print(summary, results)


def _first_line(text: str, limit: int = 160) -> str:
    """An error's first line, cut short: the record holds the whole message."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _print(summary: Summary, results: Path) -> None:
    from rich import box
    from rich.table import Table

    out = _console()
    states = STATES if summary.grid else STATES[:-1]
    what = f"{len(summary.cells)} cell(s) of the grid" if summary.grid else "what it holds"
    # light borders and shared padding: the whole table fits 80 columns
    table = Table(title=f"{results}: {what}", box=box.SIMPLE, collapse_padding=True, pad_edge=False)
    counts = summary.counts()
    for i, name in enumerate(("dataset", "method")):
        width = max((len(key[i]) for key in counts), default=0)
        table.add_column(name, no_wrap=True, min_width=max(width, len("total")))
    for s in (*states, "total"):
        table.add_column(s, justify="right", no_wrap=True, min_width=len(s))
    for (block, method), row in counts.items():
        table.add_row(block, method, *(str(row[s]) for s in states), str(sum(row.values())))
    total = summary.total()
    table.add_row(
        "[bold]total[/]",
        "",
        *(f"[bold]{total[s]}[/]" for s in states),
        f"[bold]{len(summary.cells)}[/]",
    )
    out.print(table)
    for state, colour in _LISTED.items():
        cells = [c for c in summary.cells if c.state == state]
        for c in cells[:_SHOWN]:
            detail = _first_line(c.detail)
            line = f"[{colour}]{state}[/] {c.where}" + (f": {detail}" if detail else "")
            out.print(line, soft_wrap=True)
        if len(cells) > _SHOWN:
            out.print(f"  ... and {len(cells) - _SHOWN} more {state}")
    if summary.stale_claims:
        out.print(
            f"[yellow]{summary.stale_claims} claim(s) left by runners that died[/]: the next "
            "`bench run` takes them over"
        )
    for path, what in summary.skipped:
        line = f"[yellow]skipped[/] {path}: {what}"
        if path in summary.blocking:
            line += (
                f"; it sits where the record of {summary.blocking[path]} goes, so `bench run` "
                "will not start until it is moved"
            )
        out.print(line, soft_wrap=True)  # a path broken over lines cannot be copied
    if summary.grid:
        out.print(
            f"{total['done']} of {len(summary.cells)} cell(s) done, {total['missing']} missing, "
            f"{total['running']} running"
        )
    else:
        out.print(f"{len(summary.cells)} cell(s) with a record or a live claim in {results}/")
