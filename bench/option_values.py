"""The fixed values of `bench` options, in a module that imports nothing heavy: the checks
(bench.grid, bench.precision, bench.launchers, bench.tuning_plan) and the command line's choices
(bench.cli.choices, read by `--help` and shell completion, which must not wait for torch) both
take them from here."""

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
LAUNCHERS = ("local", "subprocess", "slurm")
CLUSTERS = ("slurm", "local")  # local: submitit runs the jobs as processes here (tests, laptops)
# none: every trial trains the cell's epochs. halving: successive halving (Jamieson & Talwalkar,
# AISTATS 2016; Li et al., Hyperband, JMLR 2018): all `budget` configurations train a short
# schedule, the best 1/eta go on to eta times the epochs, and so on up to the full epochs.
SCHEDULERS = ("none", "halving")
