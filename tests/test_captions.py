"""Figure captions (bench.report.captions): by figure kind, for the HTML report."""

from __future__ import annotations

from pathlib import Path

from bench.report.captions import CAPTIONS, caption, figure_kind


def test_kind_is_the_file_name_before_the_first_dash() -> None:
    assert figure_kind(Path("figures/score_vs_params-derma-8-shot-vit-s.png")) == "score_vs_params"
    assert figure_kind("reliability-derma-vit-b-2") == "reliability"
    assert figure_kind("budget-derma.png") == "budget"


def test_caption_by_path_or_stem() -> None:
    path = Path("out/figures/score_vs_params-derma-vit-s.png")
    assert caption(path) == caption("score_vs_params-derma-vit-s") == CAPTIONS["score_vs_params"]
    assert caption("score_vs_memory-x.pdf") == CAPTIONS["score_vs_memory"]
    assert caption("cd_diagram-x") == ""  # no caption yet: the caller shows the file name


def test_captions_say_how_to_read_the_figure() -> None:
    params = caption("score_vs_params-x")
    assert "log scale" in params and "Up and to the left is better" in params
    assert "±1 standard deviation over the seeds" in params
    assert "at least two methods" in params  # the front is drawn only then
    assert "no front" in caption("score_vs_memory-x")
    reliability = caption("reliability-x")
    assert "diagonal" in reliability and "pooled over seeds" in reliability
    assert "how many predictions each bin holds" in reliability
