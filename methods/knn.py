"""k-nearest-neighbour classification on frozen features: the training-free baseline that
foundation-model evaluations report beside the linear probe (DINO, Caron et al. 2021, and
DINOv2, Oquab et al. 2023: cosine similarity, the k most similar training images vote with
weights softmax(similarity / T), k = 20, T = 0.07).

Nothing trains. The training split's pre-logits features (the cache `linear` builds, shared with
it) become the model's memory in one pass (`remember`); an image's class probabilities are the
weighted votes of its k neighbours, and its logits their logarithm, so that softmax gives back
the votes. Multi-label: each label is voted on apart (the weighted share of neighbours carrying
it), and the logits are the votes' log-odds, so that a sigmoid gives them back."""

from __future__ import annotations

import torch
from torch import nn

from bench.hparam_limits import positive, whole
from methods.frozen_head import FEATURE, CachedFrozenBackboneHead
from methods.registry import register
from methods.search import SearchSpace

# Votes are clamped this far from 0 (and 1, multi-label) before the log: a class no neighbour
# votes for stays finite for the metrics, at a probability no score can tell from 0.
_EPS = 1e-7


class KnnClassifier(CachedFrozenBackboneHead):
    """A frozen timm ViT whose head is a k-NN vote over the training features it remembers."""

    training_free = True  # the harness fills the memory (`remember`) instead of training

    def __init__(self, backbone: nn.Module, *, k: int, temperature: float) -> None:
        super().__init__(backbone, settings={"head": "knn", "k": k, "temperature": temperature})
        self.head = nn.Identity()  # the timm head (and its parameters) is not used
        self.k, self.temperature = k, temperature
        self.multilabel = False
        # the training features (L2-normalised) and labels; empty until `remember`
        self.register_buffer("memory", torch.empty(0, self.feature_dim), persistent=False)
        self.register_buffer("memory_labels", torch.empty(0), persistent=False)

    @torch.no_grad()
    def remember(
        self, features: dict[str, torch.Tensor], labels: torch.Tensor, *, multilabel: bool
    ) -> None:
        """Keep the training split's features ({"pre_logits": [N, D]}, as `frozen_features`
        gives them) and labels ([N] classes, or [N, C] multi-hot)."""
        self.memory = nn.functional.normalize(features[FEATURE].float(), dim=1)
        self.memory_labels = labels.float() if multilabel else labels.long()
        self.multilabel = multilabel

    def votes(self, features: torch.Tensor) -> torch.Tensor:
        """[B, C] class (or label) probabilities from the k most similar remembered images."""
        query = nn.functional.normalize(features.float(), dim=1)
        similarity = query @ self.memory.T
        k = min(self.k, self.memory.shape[0])
        top, index = similarity.topk(k, dim=1)
        weights = torch.softmax(top / self.temperature, dim=1)  # [B, k], rows sum to 1
        if self.multilabel:
            return torch.einsum("bk,bkc->bc", weights, self.memory_labels[index])
        one_hot = nn.functional.one_hot(self.memory_labels[index], self.num_classes).float()
        return torch.einsum("bk,bkc->bc", weights, one_hot)

    @torch.no_grad()
    def forward_with(
        self, x: torch.Tensor | None, features: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        query = features[FEATURE]
        if self.memory.shape[0] == 0:
            # before `remember`: the cost count runs the model then, and its FLOPs leave out
            # the similarity search (N_train x D multiply-adds per image, small beside a ViT)
            return torch.zeros(query.shape[0], self.num_classes, device=query.device)
        p = self.votes(query).clamp(_EPS, 1 - _EPS if self.multilabel else 1.0)
        return torch.logit(p) if self.multilabel else p.log()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with(x, {FEATURE: self.pre_logits(x)})


@register(
    "knn",
    lr=1e-3,  # unused: nothing trains (the registry asks every method for a rate)
    search=SearchSpace.grid(
        lr=(1e-3,),
        weight_decay=(0.0,),
        hparams={"k": (10, 20, 50, 100), "temperature": (0.07,)},
        source="suite: k around DINO's and DINOv2's k-NN default of 20, at their T = 0.07",
    ),
    summary="k-NN on frozen features: cosine similarity, softmax(sim/T)-weighted votes of the "
    "k nearest training images; trains nothing",
    paper="https://arxiv.org/abs/2104.14294",
    training_free=True,
    limits={"k": whole(1), "temperature": positive()},
)
def build(model: nn.Module, *, k: int = 20, temperature: float = 0.07) -> nn.Module:
    """k-NN classifier on the frozen backbone's pre-logits features (DINO/DINOv2 evaluation)."""
    model.requires_grad_(False)
    return KnnClassifier(model, k=k, temperature=temperature)
