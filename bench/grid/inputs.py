"""The grid's inputs: the backbone's weights and every dataset (with its few-shot views), read
and checked once, before any cell runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.backbones import (
    BackboneSource,
    check_weights_reachable,
    file_sha256,
    resolve_backbone,
)
from bench.cards import DatasetCard
from bench.catalog import get_card
from bench.config import CellConfig
from bench.console import reading_bar
from bench.data import LoadedDataset, few_shot, load_dataset
from bench.demo_vit import DEMO_VIT_VERSION
from bench.errors import UserError
from bench.formats import get_format
from bench.grid.expand import data_key
from bench.grid.request import GridRequest
from bench.weights import DEMO_BACKBONE, check_weights_file


@dataclass
class Inputs:
    source: BackboneSource
    # (dataset, shots, split seed) -> the dataset or its few-shot view (empty in a dry run)
    datasets: dict[tuple, LoadedDataset] = field(default_factory=dict)
    # dataset -> stored image size (None when unknown in a dry run): FPT+'s resolution rule
    sizes: dict[str, int | None] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # a dry run's absent datasets, as notes


def weights_id(req: GridRequest, source: BackboneSource) -> str | None:
    """What identifies the weights in run ids: the file's hash, or for the suite's own
    pretrained demo ViT its recipe (float results of one recipe differ across CPUs, and results
    folders are shared across machines)."""
    if source.name == DEMO_BACKBONE and req.weights is None and req.pretrained:
        return f"recipe:{DEMO_VIT_VERSION}"
    return source.weights_sha256


def check_data(cards: list[DatasetCard], root: Path, *, dry_run: bool) -> list[str]:
    """Fail on the first dataset that is not there; a dry run lists them all instead."""
    missing = []
    for card in cards:
        try:
            get_format(card.format).check_available(card, root)
        except UserError:
            if not dry_run:
                raise
            where = get_format(card.format).location(card, root)
            missing.append(
                f"missing data: {card.name} (expected {where}; `bench data info {card.name}` "
                "shows the layout and where to get it)"
            )
    return missing


def resolve_source(req: GridRequest, *, dry_run: bool, progress: bool) -> BackboneSource:
    """The backbone and its weights. A dry run downloads nothing, but checks (safely) and hashes
    a --weights file as a real run would: a bad file fails it too, and its run ids are real."""
    if not dry_run:
        return resolve_backbone(
            req.backbone, pretrained=req.pretrained, weights=req.weights, progress=progress
        )
    source = resolve_backbone(req.backbone, pretrained=False, weights=None)
    weights, digest = Path(req.weights).expanduser() if req.weights else None, None
    if weights is not None:
        check_weights_file(weights, req.backbone)
        digest = file_sha256(weights)
    return type(source)(req.backbone, req.pretrained, weights, digest)


def weights_note(req: GridRequest) -> list[str]:
    """A dry run's note when the backbone's pretrained weights are neither cached nor reachable:
    said now, where the real run would stop before training."""
    if not req.pretrained or req.weights is not None or req.backbone == DEMO_BACKBONE:
        return []
    try:
        check_weights_reachable(req.backbone)
    except UserError as exc:
        return [f"backbone weights: {exc} (the real run stops here)"]
    return []


def load_inputs(
    req: GridRequest, cards: list[DatasetCard], root: Path, *, dry_run: bool, progress: bool
) -> Inputs:
    """Read the backbone and the data. A dry run reads no images: image sizes come from the
    files' headers, so its run ids match the real run's."""
    inputs = Inputs(source=resolve_source(req, dry_run=dry_run, progress=progress))
    for card in cards:
        if dry_run:
            inputs.sizes[card.name] = get_format(card.format).stored_image_size(card, root)
            continue
        with reading_bar(f"reading {card.name}", enabled=progress) as on_progress:
            data = load_dataset(card, root, on_progress=on_progress)
        # The stored image size decides resolution rules (FPT+ never upsamples past it).
        inputs.sizes[card.name] = int(data.splits["train"].images.shape[-1])
        for shots, split_seed in req.shot_grid:
            # Sampling now means too few images for the shots fails before any training.
            view = data if shots is None else few_shot(data, shots, split_seed, root)
            inputs.datasets[(card.name, shots, split_seed)] = view
    return inputs


def training_images(
    cells: list[CellConfig], datasets: dict[tuple, LoadedDataset]
) -> tuple[int, int]:
    """(images passed through training over the grid where the train size is known, cells whose
    size is unknown): a compute estimate that needs no data. Few-shot samples are K per class."""
    known, unknown = 0, 0
    for cell in cells:
        data = datasets.get(data_key(cell))
        if data is not None:
            n = len(data.splits["train"])
        elif cell.shots is not None and not get_card(cell.dataset).reader.get("shot_files"):
            n = cell.shots * len(get_card(cell.dataset).classes)
        else:
            unknown += 1
            continue
        known += n * cell.epochs
    return known, unknown
