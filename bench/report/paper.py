"""A paper's published table beside this suite's reproduced numbers: `bench report --paper`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from bench.errors import UserError
from bench.protocols import PAPER_DIR, Protocol, get_protocol
from bench.records import write_atomic
from bench.report.demo_mark import demo_caption, demo_markdown, is_demo
from bench.report.formats import to_latex_tables, to_markdown
from bench.report.missing import lines as missing_lines
from bench.report.missing import missing_in_protocol

ALL_DATASETS = "*"  # a paper column that averages over every dataset of the protocol
# More published columns than this (each shown as paper, ours, diff) make one table per shot
# setting instead of one table nobody can read.
MAX_COLUMNS_PER_TABLE = 4
_TRIPLE = ("paper", "ours", "diff")  # the shown columns of each published one


def published(protocol: Protocol) -> pd.DataFrame:
    """The paper's numbers as a frame (paper method, dataset, shots, metric, value)."""
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


def paper_table(protocol: Protocol, long: pd.DataFrame) -> pd.DataFrame:
    """The paper's table layout: one row per paper method, for every published column the
    published value, the reproduced mean (percent, over seeds and split seeds of ok runs on the
    protocol's backbone) and the difference; `not run` where no record matches."""
    pub = published(protocol)
    pub = pub[pub["method"].isin(protocol.paper_methods)]
    mine = protocol_records(protocol, long)
    ok = mine[mine["status"] == "ok"] if len(mine) else mine
    rows = []
    for method, part in pub.groupby("method", sort=False):
        ours = protocol.paper_methods[method]
        row: dict[str, Any] = {"method": method, "ours": ours}
        for rec in part.itertuples(index=False):
            column = _column_title(rec.dataset, rec.shots)
            value = _reproduced(protocol, ok, ours, str(rec.dataset), str(rec.shots))
            row[f"{column} paper"] = float(rec.value)
            row[f"{column} ours"] = value
            row[f"{column} diff"] = value - float(rec.value) if value == value else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def _column_title(dataset: Any, shots: Any) -> str:
    """A published column's title: "ChestDR 1", "MedFMC-average(9 tasks) 1/5/10"."""
    return f"{dataset} {shots}".strip()


# The long frame's columns a protocol fixes, beside its grid (methods, datasets, shots, seeds).
_SETTINGS = ("backbone", "img_size", "epochs", "batch_size", "augment")


def protocol_records(protocol: Protocol, long: pd.DataFrame) -> pd.DataFrame:
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
    if "recipe" in long:
        keep &= pd.Series(
            [_follows(protocol, *row) for row in zip(long["method_name"], long["recipe"],
                                                       long["hparams"], strict=True)],
            index=long.index,
        )  # fmt: skip
    return long[keep]


def _follows(protocol: Protocol, method: str, recipe: dict, hparams: dict) -> bool:
    """Whether a record trained with the recipe the protocol pins for its method. The learning
    rate and weight decay are left to the regime: a search chooses them for tuned records."""
    pinned = protocol.training_for(method)
    for key, value in pinned.items():
        if key not in ("lr", "weight_decay") and recipe.get(key) != value:
            return False
    return all(hparams.get(k) == v for k, v in protocol.hparams.get(method, {}).items())


def differences_note(protocol: Protocol, mine: pd.DataFrame) -> str:
    """What in the table differs from the paper: the protocol's stated differences, and records
    it counts that ran at another precision than the paper's (--precision given)."""
    lines = list(protocol.differences)
    if len(mine) and "precision" in mine:
        other = mine[mine["status"].eq("ok") & mine["precision"].ne(protocol.precision)]
        for precision, n in other["precision"].value_counts().items():
            lines.append(
                f"{n} record(s) ran in {precision} where the paper ran {protocol.precision}"
            )
    return "Settings that differ from the paper: " + ("; ".join(lines) or "none") + "."


def _reproduced(
    protocol: Protocol, ok: pd.DataFrame, method: str, dataset: str, shots: str
) -> float:
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


class PaperParts(NamedTuple):
    """What both renderings of a paper's table show, computed once."""

    name: str
    protocol: Protocol
    shown: pd.DataFrame  # the table formatted: "12.34", "not run", "—"
    pieces: list[tuple[str, pd.DataFrame, list[str]]]  # (title, frame, column titles): the
    # shown table as the tables rendered, one per shot setting when it is wide
    missing: pd.DataFrame  # missing_in_protocol
    not_run: str  # "Cells not run yet: N of M"
    other: str  # records of its datasets and methods left out for other settings, or ""
    differs: str  # differences_note: what differs from the paper ("... none." when nothing)
    regime: str = "fixed"  # whose numbers `ours` shows: PAPER_REGIMES
    other_regime: str = ""  # records left out for the other regime, or ""
    demo: bool = False  # some record it counts ran on the demo data or backbone


# `bench report --paper NAME --paper-regime`: the protocol's fixed hyperparameters (each
# method's defaults, or the paper's per-dataset rates where the protocol pins them), or the
# selected configurations of `bench run --protocol NAME --tune`.
PAPER_REGIMES = ("fixed", "tuned")


def _regime_rows(long: pd.DataFrame, regime: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows of `regime`, named by their method so the protocol matches them; the other rows)."""
    if regime not in PAPER_REGIMES:
        raise UserError(f"--paper-regime must be one of {', '.join(PAPER_REGIMES)}, not {regime!r}")
    if long.empty or "regime" not in long:
        return long, long.iloc[0:0]
    mine = long["regime"] == regime
    return long[mine].assign(method=long.loc[mine, "method_name"]), long[~mine]


def _paper_parts(name: str, long: pd.DataFrame, regime: str = "fixed") -> PaperParts:
    """The protocol, its formatted table, the cells of its grid with no record, and a note on
    records of its datasets and methods left out for being run with other settings or in the
    other regime (fixed vs tuned hyperparameters)."""
    protocol = get_protocol(name)
    long, elsewhere = _regime_rows(long, regime)
    other_regime = ""
    if len(elsewhere):
        n = int((elsewhere["dataset"].isin(protocol.datasets)
                 & elsewhere["method_name"].isin(protocol.methods)).sum())  # fmt: skip
        flip = "tuned" if regime == "fixed" else "fixed"
        if n:
            other_regime = (
                f"{n} record(s) of this protocol's datasets and methods have {flip} "
                f"hyperparameters and are left out (`--paper-regime {flip}` shows them)."
            )
    table = paper_table(protocol, long)
    mine = protocol_records(protocol, long)
    missing = missing_in_protocol(protocol, mine)
    n_missing = int(missing["n_missing"].sum()) if len(missing) else 0
    other = ""
    if len(long):
        candidates = long[long["dataset"].isin(protocol.datasets)
                          & long["method"].isin(protocol.methods)]  # fmt: skip
        n_other = len(candidates) - len(mine)
        if n_other:
            other = (
                f"{n_other} record(s) of this protocol's datasets and methods were run with other "
                f"settings and are left out: the table uses only backbone {protocol.backbone}, "
                f"input {protocol.img_size or 'native'} px, {protocol.epochs} epochs, batch "
                f"{protocol.batch_size}, augmentation {protocol.augment} and the paper's "
                f"training recipe (`bench run --protocol {name} --dry-run` lists it; "
                f"`bench run --protocol {name}` runs exactly these)."
            )
    not_run = f"Cells not run yet: {n_missing} of {_protocol_size(protocol)}"
    shown = _paper_shown(table)
    return PaperParts(
        name, protocol, shown, _pieces(protocol, shown), missing, not_run, other,
        differences_note(protocol, mine), regime, other_regime, is_demo(mine),
    )  # fmt: skip


def _pieces(protocol: Protocol, shown: pd.DataFrame) -> list[tuple[str, pd.DataFrame, list[str]]]:
    """The shown table as rendered: whole when it has at most MAX_COLUMNS_PER_TABLE published
    columns, else one table per shot setting ("1-shot", ..., then the averages), each titled by
    it and with one (paper, ours, diff) column group per dataset."""
    pub = published(protocol)
    shots_of = {
        _column_title(d, k): (str(d), "" if pd.isna(k) else str(k))
        for d, k in zip(pub["dataset"], pub["shots"], strict=True)
    }
    columns = [c.rsplit(" ", 1)[0] for c in shown.columns[1::3]]
    if len(columns) <= MAX_COLUMNS_PER_TABLE:
        return [("", shown, columns)]
    by_shots: dict[str, list[str]] = {}
    for c in columns:
        by_shots.setdefault(shots_of[c][1], []).append(c)
    out = []
    for k, cs in by_shots.items():
        title = f"{k}-shot" if k.isdigit() else f"{k} shots" if k else "all data"
        names = [shots_of[c][0] for c in cs]
        frame = shown[["method", *(f"{c} {x}" for c in cs for x in _TRIPLE)]].set_axis(
            ["method", *(f"{n} {x}" for n in names for x in _TRIPLE)], axis=1
        )
        out.append((title, frame, names))
    return out


def _paper_shown(table: pd.DataFrame) -> pd.DataFrame:
    shown = table.drop(columns=["ours"]).copy()
    for col in shown.columns[1:]:
        absent = "—" if col.endswith(" diff") else "not run"
        shown[col] = shown[col].map(lambda v, a=absent: a if pd.isna(v) else f"{v:.2f}")
    return shown


def render_paper_table(name: str, long: pd.DataFrame, regime: str = "fixed") -> str:
    """Markdown of a paper's table: published, reproduced and difference per column, then the
    protocol's cells with no record."""
    return _paper_markdown(_paper_parts(name, long, regime))


def _paper_markdown(parts: PaperParts) -> str:
    protocol = parts.protocol
    lines = [
        f"# {protocol.title}",
        "",
        parts.differs,
        "",
        f"Metric: {protocol.paper_metric_note}.",
        "",
    ]
    for title, frame, _ in parts.pieces:
        lines += [f"## {title}", ""] if title else []
        lines += [to_markdown(frame), ""]
    lines += [_paper_legend(protocol, parts.regime), ""]
    for note in (parts.other, parts.other_regime):
        if note:
            lines += [note, ""]
    lines += [f"## {parts.not_run}", ""]
    lines += [f"- {line}" for line in missing_lines(parts.missing)] or [
        "None: the grid is complete."
    ]
    lines += ["", "## Sources", ""]
    lines += [f"- {line}" for line in source_lines(protocol)]
    return demo_markdown("\n".join(lines) + "\n", parts.demo)


REGIME_TEXT = {
    "fixed": "with fixed hyperparameters (each method's defaults, or the paper's own values "
    "where the protocol pins them)",
    "tuned": "with the configuration each method's search selected on validation (`bench run "
    "--protocol NAME --tune`; the budget is in the records)",
}


def _paper_legend(protocol: Protocol, regime: str = "fixed") -> str:
    return (
        "`paper`: published; `ours`: mean over seeds and split seeds of this suite's ok "
        f"records run under the protocol (`{protocol.backbone}`) {REGIME_TEXT[regime]}; "
        "`diff` = ours - paper; `not run`: no record (or, for an average, not every cell it "
        "averages)."
    )


def _protocol_size(protocol: Protocol) -> int:
    shots = len(protocol.shots) if protocol.shots else 1
    splits = len(protocol.split_seeds) if protocol.shots and protocol.split_seeds else 1
    return len(protocol.datasets) * shots * splits * len(protocol.methods) * len(protocol.seeds)


def render_paper_latex(name: str, long: pd.DataFrame, regime: str = "fixed") -> str:
    """The same table as booktabs LaTeX, one column group (paper, ours, diff) per published
    column."""
    return _paper_latex(_paper_parts(name, long, regime))


def _paper_latex(parts: PaperParts) -> str:
    notes = [
        f"Metric: {parts.protocol.paper_metric_note}.",
        _paper_legend(parts.protocol, parts.regime),
        f"{parts.not_run}.",
    ]  # the differences from the paper go in the caption
    notes += [n for n in (parts.other, parts.other_regime) if n]
    tables = []
    for i, (title, frame, names) in enumerate(parts.pieces):
        shown = frame.copy()
        shown.columns = ["method", *(c.rsplit(" ", 1)[1] for c in frame.columns[1:])]
        caption = f"{parts.protocol.title}: {title}" if title else parts.protocol.title
        if i == 0:  # once, above the tables it applies to
            caption = f"{caption}. {parts.differs}"
        caption = demo_caption(caption, parts.demo)
        label = f"tab:{parts.name}" + (f"-{i + 1}" if i else "")
        groups = [("", 1), *((n, 3) for n in names)]
        tables.append({"frame": shown, "caption": caption, "label": label, "groups": groups})
    return to_latex_tables(tables, notes)


def paper_section(parts: PaperParts) -> dict[str, Any]:
    """The report page's section of a paper's table (`render_html`'s format); the cells not
    run are listed in paper-NAME.md."""
    notes = [
        parts.differs,
        f"Metric: {parts.protocol.paper_metric_note}.",
        _paper_legend(parts.protocol, parts.regime),
        *(n for n in (parts.other, parts.other_regime) if n),
        f"{parts.not_run} (listed in paper-{parts.name}.md).",
        "Sources: " + " ".join(source_lines(parts.protocol)),
    ]
    return {
        "heading": f"Paper: {parts.protocol.title}",
        "tables": [(title, frame) for title, frame, _ in parts.pieces],
        "notes": notes,
    }


def write_paper_table(
    name: str, long: pd.DataFrame, out_dir: Path, regime: str = "fixed"
) -> tuple[list[Path], dict[str, Any]]:
    """`paper-NAME.md` and `paper-NAME.tex` in `out_dir`, and the report page's section
    (`paper_section`), from one computation of the table."""
    parts = _paper_parts(name, long, regime)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"paper-{name}.md"
    write_atomic(md, _paper_markdown(parts))
    tex = out_dir / f"paper-{name}.tex"
    write_atomic(tex, _paper_latex(parts))
    return [md, tex], paper_section(parts)
