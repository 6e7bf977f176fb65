"""What each report figure shows and how to read it, keyed by its kind: the part of its file
name before the first "-" (`score_vs_params-derma-vit-s.png` is a `score_vs_params`)."""

from __future__ import annotations

from pathlib import Path

_POINTS = (
    "Each marker is one method's mean test score over its seeds (the legend gives how many; "
    "bars: ±1 standard deviation over the seeds, none for a single seed)"
)
_FRONT = (
    " The dashed staircase joins the methods no other method beats on both score and cost "
    "(the Pareto front); it is drawn only when at least two methods are on it."
)
_LEGEND = (
    " Each method keeps its colour and marker in every figure; a hollow marker is a variant of "
    "the method of that colour (a tuned row, or one of several settings)."
)

CAPTIONS: dict[str, str] = {
    "score_vs_params": f"{_POINTS}, against the share of the backbone's parameters it trains, "
    "on a log scale. Up and to the left is better: a higher score for fewer trained "
    f"parameters.{_FRONT}{_LEGEND}",
    "score_vs_train_flops": f"{_POINTS}, against the compute one training step spends per "
    "image (forward and backward pass, in GFLOPs; a log scale when the methods differ more than "
    "20-fold). Up and to the left is better: a higher score for less training compute."
    f"{_FRONT}{_LEGEND}",
    "score_vs_memory": f"{_POINTS}, against the memory its training used, as the axis defines "
    "it; a log scale when the methods differ more than 20-fold. Up and to the left is better: a "
    "higher score on a smaller machine. Memory is measured differently on a GPU and on a CPU, "
    f"so no front is drawn.{_LEGEND}",
    "train_time": "Training time of each method (mean over its seeds), fastest on top; the "
    "number beside each bar is its training throughput in images per second. Times are only "
    "comparable between runs on the same kind of machine under the same load (see the table's "
    "notes).",
    "reliability": "Reliability diagram per method: the test predictions are binned by their "
    "confidence (the predicted class's probability) and each bar is the accuracy within its "
    "bin, pooled over seeds. A calibrated model's bars reach the dashed diagonal; bars below it "
    "mean over-confidence, above it under-confidence, and the hatched gap is what the expected "
    "calibration error (ECE, in each title) averages. The strip under each panel gives how many "
    "predictions each bin holds (summed over seeds; n in the title is their total): a bin of "
    "only a few predictions, drawn pale, says little.",
    "score_vs_shots": "Each method's mean test score over its seeds (bars: ±1 standard "
    "deviation over the seeds) at each number of training images per class, full training set "
    "last. A flat line learns as well from few images as from many; methods are nudged apart "
    "sideways at each shot count so their bars stay visible.",
    "cd": "Critical-difference diagram (Demšar 2006): each method sits at its mean rank over "
    "the complete blocks (1 = best). Methods joined by a thick bar do not differ significantly "
    "(Nemenyi test, α = 0.05): their mean ranks differ by less than the critical difference CD, "
    "the length of the bar drawn above the axis.",
    "confusion": "Confusion matrix per method: rows are the true class, columns the predicted "
    "class. Numbers are test images summed over seeds; the colour is the row's share, so the "
    "diagonal shows each class's recall.",
    "budget": "For each method, the best validation score among the first k trials of its "
    "hyperparameter search, against k (mean over the split seeds): what a search of budget k "
    "would have selected on. A line that levels off early needs little tuning.",
}


def figure_kind(path_or_stem: str | Path) -> str:
    """`score_vs_params` for `figures/score_vs_params-derma-vit-s.png` or its stem."""
    return Path(path_or_stem).stem.split("-", 1)[0]


def caption(path_or_stem: str | Path) -> str:
    """The caption of a report figure, by its kind; "" for a kind without one, so the caller
    can fall back to the file name."""
    return CAPTIONS.get(figure_kind(path_or_stem), "")
