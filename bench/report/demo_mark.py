"""The DEMO notice on every report file made from demo records: a quoted line on top of
markdown, the start of a LaTeX caption (so a typeset table says it too), a `demo` column in CSV
(a comment line would break CSV readers)."""

from __future__ import annotations

import pandas as pd

from bench.demo import DEMO_NOTICE
from bench.report.names import block_title
from bench.report.stats import prepare

DEMO_LINE = f"> **{DEMO_NOTICE}.**"  # on top of a markdown file


def is_demo(df: pd.DataFrame) -> bool:
    """Whether any record of the long frame ran on the demo data."""
    return not df.empty and "demo" in df and bool(df["demo"].astype(bool).any())


def demo_markdown(text: str, demo: bool) -> str:
    """`text` with the notice quoted above it when `demo`."""
    return f"{DEMO_LINE}\n\n{text}" if demo else text


def demo_caption(caption: str, demo: bool) -> str:
    return f"{DEMO_NOTICE}. {caption}" if demo else caption


def with_demo_column(table: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """`table` (one row per block, method and setting: `score_table`, `efficiency_table`) with a
    `demo` column: whether any of the row's records ran on the demo data."""
    p = prepare(df)
    keys = zip(p["dataset"], p["shots_key"], p["backbone"], strict=True)
    flags = (
        pd.DataFrame(
            {
                "block": [block_title(*k) for k in keys],
                "method": p["method"].to_numpy(),
                "setting": p["setting"].to_numpy(),
                "demo": df["demo"].astype(bool).to_numpy() if "demo" in df else False,
            }
        )
        .groupby(["block", "method", "setting"], sort=False)["demo"]
        .any()
    )
    rows = zip(table["block"], table["method"], table["setting"], strict=True)
    return table.assign(demo=[bool(flags.get(k, False)) for k in rows])
