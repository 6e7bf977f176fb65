"""One style per method name (bench.report.palette), the same in every figure and report."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np

from bench.report import palette
from bench.report.palette import ALIASES, COLORS, REGISTERED, Style, method_style, split_variant


def test_pinned_order_covers_the_registry() -> None:
    import methods
    from methods.registry import _ALIASES

    # A newly registered method must be appended to REGISTERED (never inserted: colours move).
    assert sorted(REGISTERED) == sorted(methods.list_methods(include_unavailable=True))
    assert len(set(REGISTERED)) == len(REGISTERED)
    assert dict(_ALIASES) == ALIASES


def test_registered_styles_by_hand() -> None:
    assert method_style("full") == Style("#0072B2", "o")
    assert method_style("lora") == Style("#D55E00", "o")
    # slot 26 of 10 colours: the 7th colour in the 3rd round of markers
    assert method_style("ssf") == Style("#000000", "^")
    assert method_style("fpt") == method_style("fpt-plus")  # an alias older records carry


def test_every_registered_method_is_distinguishable() -> None:
    styles = [method_style(m) for m in REGISTERED]
    assert len({(s.color, s.marker) for s in styles}) == len(REGISTERED)
    # the first methods of the registry (the core ones among them) differ by colour alone
    assert len({s.color for s in styles[: len(COLORS)]}) == len(COLORS)
    rgb = [np.array(mcolors.to_rgb(c)) for c in COLORS]
    closest = min(np.linalg.norm(a - b) for a, b in itertools.combinations(rgb, 2))
    assert closest > 0.25  # Okabe-Ito's orange and vermillion are the closest pair, 0.26


def test_plugin_names_hash_the_same_in_every_process() -> None:
    registered = {(method_style(m).color, method_style(m).marker) for m in REGISTERED}
    plugins = ["my-adapter", "hospital_lora_v2", "x"]
    for name in plugins:
        style = method_style(name)
        assert (style.color, style.marker) not in registered  # never mistaken for a built-in
    code = (
        "from bench.report.palette import method_style\n"
        f"print([tuple(vars(method_style(n)).values()) for n in {plugins!r}])"
    )
    root = str(Path(palette.__file__).parents[2])  # this checkout's bench, not another one's
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root},
        ).stdout
        for seed in ("1", "2")
    }  # str hash() differs between these two processes; the styles must not
    expected = [tuple(vars(method_style(n)).values()) for n in plugins]
    assert outputs == {f"{expected}\n"}


def test_variants_keep_their_method_colour() -> None:
    assert split_variant("lora (tuned, budget 8)") == ("lora", " (tuned, budget 8)")
    assert split_variant("lora [1a2b3c4d]") == ("lora", " [1a2b3c4d]")
    assert split_variant("my (odd) method") == ("my (odd) method", "")
    lora = method_style("lora")
    for name in ("lora (tuned, budget 8)", "lora (search trials)", "lora [1a2b3c4d]"):
        variant = method_style(name)
        assert variant.color == lora.color
        assert not variant.filled and variant.facecolor == "white"
        assert variant.marker != lora.marker and variant.linestyle != lora.linestyle
