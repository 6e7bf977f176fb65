"""The training augmentation presets (`--augment`): their names, parameters and one-line
summaries. Torch-free, so `bench list` and option checks read them without importing torch;
bench.transforms applies them."""

from __future__ import annotations

from dataclasses import dataclass

from bench.errors import UserError


@dataclass(frozen=True)
class Augmentation:
    """One training augmentation recipe; evaluation ignores it."""

    name: str
    crop_scale: tuple[float, float] | None  # random resized crop area range; None = no crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5  # probability
    vflip: float = 0.0
    brightness: float = 0.0  # ColorJitter-style factors in [max(0, 1-b), 1+b]
    contrast: float = 0.0
    summary: str = ""  # one line for `bench list` / --help, citing where it comes from

    def __post_init__(self) -> None:
        for label, rng in (("crop_scale", self.crop_scale), ("crop_ratio", self.crop_ratio)):
            if rng is not None and not (len(rng) == 2 and 0 < rng[0] <= rng[1]):
                raise ValueError(f"{self.name}: {label} must be (lo, hi) with 0 < lo <= hi: {rng}")
        for label, p in (("hflip", self.hflip), ("vflip", self.vflip)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{self.name}: {label} must be a probability in [0, 1]: {p}")
        for label, b in (("brightness", self.brightness), ("contrast", self.contrast)):
            if b < 0:
                raise ValueError(f"{self.name}: {label} must be >= 0: {b}")


AUGMENTATIONS: dict[str, Augmentation] = {
    a.name: a
    for a in (
        Augmentation(
            "rrc-flip",
            crop_scale=(0.8, 1.0),
            summary="random resized crop scale 0.8-1, ratio 3/4-4/3 + h-flip 0.5; a mild crop "
            "that keeps lesions near the border (suite default)",
        ),
        Augmentation(
            "ept",
            crop_scale=(0.08, 1.0),
            summary="random resized crop scale 0.08-1, ratio 3/4-4/3 + h-flip 0.5 "
            "(mmcls/torchvision defaults; EPT configs/_base_/datasets/*.py)",
        ),
        Augmentation(
            "fpt",
            crop_scale=(0.8, 1.0),
            crop_ratio=(0.7, 1.3),
            brightness=0.2,
            contrast=0.2,
            summary="h-flip 0.5, brightness/contrast 0.2, random resized crop scale 0.8-1, "
            "ratio 0.7-1.3 (FPT configs/data_config.yaml weak augmentation)",
        ),
        Augmentation(
            "flip",
            crop_scale=None,
            summary="resize and horizontal flip (p 0.5) only: no crop, no colour change",
        ),
        Augmentation(
            "none",
            crop_scale=None,
            hflip=0.0,
            summary="resize only, no augmentation",
        ),
    )
}
DEFAULT_AUGMENT = "rrc-flip"


def get_augmentation(name: str) -> Augmentation:
    """The preset called `name`; a UserError listing the valid names otherwise."""
    try:
        return AUGMENTATIONS[name]
    except KeyError:
        raise UserError(
            f"unknown augmentation {name!r}; choose one of: {', '.join(AUGMENTATIONS)}"
        ) from None
