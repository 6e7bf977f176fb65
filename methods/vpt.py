"""VPT: learnable prompt tokens in the input (shallow) or every layer (deep) of a frozen ViT (Jia et al., ECCV 2022, https://arxiv.org/abs/2203.12119)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from bench.hparam_limits import fraction, whole
from methods.registry import register
from methods.search import LrRule, SearchSpace

PromptTransform = Callable[[torch.Tensor], torch.Tensor]


def prompt_init_bound(model: nn.Module) -> float:
    """VPT's "xavier-uniform" bound sqrt(6 / (in_chans*patch_h*patch_w + embed_dim)).

    Derived from the model (0.0625 for ViT-B/16): the fan-in is the patch-embedding input size,
    the fan-out the token width, as in KMnP/vpt (`3 * reduce(mul, patch_size) + prompt_dim`).
    """
    ph, pw = model.patch_embed.patch_size
    in_chans = model.patch_embed.proj.in_channels
    return math.sqrt(6.0 / (in_chans * ph * pw + model.embed_dim))


class PromptedViT(nn.Module):
    """A frozen timm ViT with `prompt_length` learnable tokens after its prefix tokens.

    Layout [prefix (CLS, registers), prompts, patches]; prompts get no position embedding.
    Shallow: one set of prompts at the input, carried through every block. Deep: before every
    block after the first, the prompt slots are overwritten with that block's own prompts, so
    block i sees only its own prompts while CLS and patch tokens flow through untouched.
    `transform` (VFPT's Fourier prompts) maps each layer's prompts [B, p, D] to new ones.
    """

    def __init__(
        self,
        vit: nn.Module,
        *,
        prompt_length: int,
        deep: bool,
        dropout: float = 0.0,
        transform: PromptTransform | None = None,
    ) -> None:
        super().__init__()
        self.vit = vit
        self.deep = deep
        self.prompt_length = prompt_length
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        layers = len(vit.blocks) if deep else 1
        self.prompt_embeddings = nn.Parameter(torch.empty(layers, prompt_length, vit.embed_dim))
        bound = prompt_init_bound(vit)
        nn.init.uniform_(self.prompt_embeddings, -bound, bound)
        # Applied per sample after expanding to the batch, as KMnP/vpt does.
        self.prompt_dropout = nn.Dropout(dropout)
        self.transform = transform

    def get_classifier(self) -> nn.Module:
        return self.vit.get_classifier()

    def layer_prompts(self, layer: int, batch: int) -> torch.Tensor:
        """The prompts block `layer` receives, [batch, p, D] (after dropout and any transform)."""
        prompts = self.prompt_embeddings[layer].expand(batch, -1, -1)
        prompts = self.prompt_dropout(prompts)
        return self.transform(prompts) if self.transform is not None else prompts

    def _insert(self, x: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        p0 = self.num_prefix_tokens
        return torch.cat((x[:, :p0], prompts.to(x.dtype), x[:, p0:]), dim=1)

    def _overwrite(self, x: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        # cat, not an in-place slice assignment: the block's output is needed for its backward.
        p0, p = self.num_prefix_tokens, self.prompt_length
        return torch.cat((x[:, :p0], prompts.to(x.dtype), x[:, p0 + p :]), dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> normed tokens [B, prefix + p + patches, D]."""
        vit = self.vit
        x = vit.patch_embed(x)
        x = vit._pos_embed(x)
        x = vit.patch_drop(x)
        x = vit.norm_pre(x)
        batch = x.shape[0]
        x = self._insert(x, self.layer_prompts(0, batch))
        for i, block in enumerate(vit.blocks):
            if self.deep and i > 0:
                x = self._overwrite(x, self.layer_prompts(i, batch))
            x = block(x)
        return vit.norm(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        # Drop the prompt outputs so the ViT's own pooling sees the layout it was built for
        # (token pooling reads CLS; avg/map pooling must not average the prompts in).
        p0, p = self.num_prefix_tokens, self.prompt_length
        x = torch.cat((x[:, :p0], x[:, p0 + p :]), dim=1)
        return self.vit.forward_head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def prompted(
    model: nn.Module,
    *,
    prompt_length: int,
    deep: bool,
    dropout: float,
    transform: PromptTransform | None = None,
) -> PromptedViT:
    """Wrap a frozen ViT with prompts; the prompts and the head train, nothing else."""
    wrapped = PromptedViT(
        model, prompt_length=prompt_length, deep=deep, dropout=dropout, transform=transform
    )
    wrapped.get_classifier().requires_grad_(True)
    return wrapped


# Defaults, shared by both variants (and VFPT). p=10: the spec's headline setting (97,543 for
# deep ViT-B/16) and the middle of the paper's grid {1, 5, 10, 50, 100, 200}.
# Optimizer: the reference's SGD (momentum 0.9), lr = base lr x batch/256 with base 0.5 from its
# grid {0.1 ... 50}: 0.0625 at batch 32. On the demo (10 epochs, batch 32, clipping at 1.0) SGD
# at 0.05-0.1 learns (84-86 % vs 73 % for the linear probe) while 0.25 and above oscillate back
# to linear-probe accuracy: the top of the reference grid needs its 100-epoch schedule.
PROMPT_LENGTH = 10
# KMnP/vpt declares rates for batch 256 and scales them by batch/256 (`tune_fgvc.py`); base 0.5
# is 0.0625 at this suite's default batch of 32.
VPT_LR_RULE = LrRule(256)
SGD_LR = 0.5
# What VPT's knobs (and VFPT's shared ones) may be.
PROMPT_LIMITS = {"prompt_length": whole(1), "dropout": fraction()}
VPT_SPACE = SearchSpace.grid(
    # The paper's order; `bench tune` shuffles it with its seed.
    lr=(5.0, 2.5, 1.0, 50.0, 25.0, 10.0, 0.5, 0.25, 0.1),
    hparams={"prompt_length": (1, 5, 10, 50, 100, 200)},
    lr_rule=VPT_LR_RULE,
    source="VPT (Jia et al. 2022) / KMnP/vpt: base lr and wd grids of tune_fgvc.py, prompt "
    "lengths of the paper",
)


def _variant(name: str, *, deep: bool, summary: str) -> None:
    """Register VPT-deep or VPT-shallow: the same defaults, training rule and space."""

    @register(
        name,
        optimizer="sgd",
        lr=SGD_LR,
        lr_rule=VPT_LR_RULE,
        search=VPT_SPACE,
        summary=summary,
        paper="https://arxiv.org/abs/2203.12119",
        limits=PROMPT_LIMITS,
    )
    def build(
        model: nn.Module, *, prompt_length: int = PROMPT_LENGTH, dropout: float = 0.0
    ) -> nn.Module:
        return prompted(model, prompt_length=prompt_length, deep=deep, dropout=dropout)


_variant(
    "vpt",
    deep=True,
    summary="VPT-deep: learnable prompt tokens overwritten before every block, plus the head",
)
_variant(
    "vpt-shallow",
    deep=False,
    summary="VPT-shallow: learnable prompt tokens at the input only, plus the head",
)
