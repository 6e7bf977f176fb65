"""`make_loader`: whole-batch indexing gives DataLoader's shuffled order for the seed, every item
once per epoch, and the sizes `fit`'s step timer is told."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from bench.train import _batch_sizes, make_loader
from bench.transforms import Preprocess


@pytest.mark.parametrize("seed", [0, 7])
def test_order_is_dataloaders_shuffle_for_the_seed(seed: int) -> None:
    images, labels = torch.arange(103 * 4).reshape(103, 4), torch.arange(103) % 5
    reference = DataLoader(TensorDataset(images, labels, torch.arange(103)), batch_size=10,
                           shuffle=True, generator=torch.Generator().manual_seed(seed))  # fmt: skip
    ours = list(make_loader(images, labels, batch_size=10, shuffle=True, seed=seed))
    for (x, y, i), (rx, ry, ri) in zip(ours, reference, strict=True):
        assert torch.equal(i, ri) and torch.equal(x, rx) and torch.equal(y, ry)
    assert torch.equal(torch.cat([b[2] for b in ours]).sort().values, torch.arange(103))
    assert [len(b[2]) for b in ours] == _batch_sizes(103, 10) == [10] * 10 + [3]


def test_sequential_for_evaluation() -> None:
    images, labels = torch.zeros(5, 1), torch.arange(5)
    batches = list(make_loader(images, labels, batch_size=2, shuffle=False, seed=0))
    assert [b[2].tolist() for b in batches] == [[0, 1], [2, 3], [4]]


@pytest.mark.parametrize("n", [64, 50])  # batches that divide the split exactly, and not
def test_fit_visits_epochs_in_the_loaders_order(monkeypatch, n: int) -> None:
    """fit fetches inside its step timer, yet every epoch's order is what a for-loop over the
    loader gives (RandomSampler draws a permutation on exhaustion; fit must exhaust it too)."""
    from timm.models.vision_transformer import VisionTransformer

    import bench.train as train

    seen: list[list[int]] = []
    original = train.logits_of

    def spy(model, x, raw, index, features):
        if model.training:
            seen.append(index.tolist())
        return original(model, x, raw, index, features)

    monkeypatch.setattr(train, "logits_of", spy)
    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=8, embed_dim=24, depth=1, num_heads=2,
                              num_classes=3)  # fmt: skip
    images = torch.randint(0, 255, (n, 3, 16, 16), dtype=torch.uint8)
    labels = torch.randint(0, 3, (n,))
    settings = train.TrainSettings(
        epochs=3, batch_size=16, optimizer="adamw", lr=1e-3, weight_decay=0.0,
        warmup_epochs=0.0, grad_clip=1.0, seed=3, device=torch.device("cpu"), precision="fp32",
        preprocess=Preprocess(img_size=16, augment="none"),
    )  # fmt: skip
    train.fit(model, (images, labels), (images[:8], labels[:8]), settings,
              score=lambda logits, y: (0.0, {}))  # fmt: skip
    loader = make_loader(images, labels, batch_size=16, shuffle=True, seed=3)
    assert seen == [b[2].tolist() for _ in range(3) for b in loader]
