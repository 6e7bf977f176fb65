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

# Training settings every method declares, and the optimizers a method or `--set` may name.
OPTIMIZERS = ("adamw", "sgd")
TRAIN_KEYS = ("optimizer", "lr", "weight_decay")
# The training keys a search space searches beside a method's own hyperparameters.
TRAIN_AXES = ("lr", "weight_decay")
# Training settings of a cell beside TRAIN_KEYS: the request's (--warmup-epochs, --grad-clip)
# unless a protocol or --set gives a method its own.
LOOP_KEYS = (
    "warmup_epochs", "grad_clip", "backbone_dropout", "head_init", "lr_step", "decay", "select",
)  # fmt: skip
# Head initialisations a cell may name (`head_init`), with where each comes from.
HEAD_INITS = {
    "timm": "timm's ViT init: weights truncated-normal (std 0.02), bias 0",
    "mmcls": "MMClassification's LinearClsHead/MultiLabelLinearClsHead (EPT's MedFMC configs): "
    "weights normal (std 0.01), bias 0",
    "kmnp": "KMnP/vpt src/models/mlp.py: weights kaiming-normal (fan_out), bias -log(99), the "
    "'prior probability 0.01' trick",
}
# Which trainable tensors weight decay reaches (`decay`): nanoGPT's rule (matrices, not biases,
# norms or other vectors), or every one, as torch's optimizers do by default (the EPT and FPT
# references).
DECAY_RULES = ("matrices", "all")
LR_STEPS = ("iteration", "epoch")  # when the cosine moves (`lr_step`)
# Which epoch's weights a cell keeps and tests (`select`, bench.selection), declared before
# training; the test split is read once, on the weights the rule chose.
SELECT_RULES = {
    "best": "the epoch with the best validation score (the earliest among ties)",
    "last": "the final epoch, whatever validation says",
    "smooth": "the best epoch of the validation curve smoothed by a trailing 3-epoch mean (less "
    "swayed by one lucky epoch on a small validation set)",
}
# The training augmentation presets (bench.transforms.AUGMENTATIONS, which a test holds equal).
AUGMENT_NAMES = ("rrc-flip", "ept", "fpt", "flip", "none")
