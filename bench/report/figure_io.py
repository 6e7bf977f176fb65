"""Saving a report figure: PNG and PDF, byte-stable, the DEMO notice stamped on demo figures."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

# A report is written on servers and in CI: never ask for a display.
matplotlib.use("Agg")

import matplotlib.pyplot as plt

from bench.demo import DEMO_NOTICE
from bench.records import write_atomic

# Fixed metadata so that rerunning a report on the same records gives the same PDF bytes.
_PDF_META = {"CreationDate": None, "Creator": "medpeft-bench", "Producer": None}
PNG_DPI = 130


def stamp_demo(fig: Any) -> None:
    """The DEMO notice along the figure's bottom edge, in the figure's own pixels: a figure
    copied out of the report still says it is not a medical result."""
    fig.text(0.5, 0.003, DEMO_NOTICE, ha="center", va="bottom", fontsize=7.5,
             color="#8a6d00", weight="bold",
             bbox={"boxstyle": "square,pad=0.25", "fc": "#fff3cd", "ec": "#d39e00", "lw": 0.6})  # fmt: skip
    # Keep the notice clear of the axes' tick labels under constrained or tight layout.
    engine = fig.get_layout_engine()
    if engine is not None and hasattr(engine, "set"):
        engine.set(rect=(0, 0.04, 1, 0.96))  # constrained and tight layout both take rect
    else:
        fig.subplots_adjust(bottom=max(fig.subplotpars.bottom, 0.14))


def save_figure(fig: Any, out_dir: Path, stem: str, *, demo: bool = False) -> list[Path]:
    """Write `stem`.png and `stem`.pdf under `out_dir` and close the figure (memory stays flat
    over many); `demo` stamps the DEMO notice on it first. Returns [png, pdf]."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf = out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"
    try:
        if demo:
            stamp_demo(fig)
        for path, options in ((png, {"dpi": PNG_DPI, "metadata": {"Software": None}}),
                              (pdf, {"metadata": _PDF_META})):  # fmt: skip
            buffer = io.BytesIO()
            fig.savefig(buffer, format=path.suffix[1:], **options)
            write_atomic(path, buffer.getvalue())  # a killed report leaves no half figure
    finally:
        plt.close(fig)
    return [png, pdf]
