"""VFPT: VPT-deep whose first prompts in every layer pass through a 2-D Fourier transform (Zeng et al., NeurIPS 2024, https://arxiv.org/abs/2411.01327)."""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.hparam_limits import fraction
from methods.registry import register
from methods.vpt import PROMPT_LENGTH, PROMPT_LIMITS, SGD_LR, VPT_LR_RULE, VPT_SPACE, prompted


class FourierPrompts(nn.Module):
    """Replace the first `num_fourier` prompts by Re(FFT_seq(FFT_hidden(.))) of themselves.

    Parameter-free, as FNet's mixing layer: the hidden-axis FFT first, then the FFT over the
    sequence of those `num_fourier` prompts (runtsang/VFPT, FOURIER_DIMENSION "all",
    FOURIER_LOCATION "prepend"). The other prompts pass unchanged.
    """

    def __init__(self, num_fourier: int) -> None:
        super().__init__()
        self.num_fourier = num_fourier

    def forward(self, prompts: torch.Tensor) -> torch.Tensor:
        k = self.num_fourier
        if k == 0:
            return prompts
        head = prompts[..., :k, :]
        # FFT in float32: half-precision FFTs need power-of-two sizes on CUDA.
        mixed = torch.fft.fft(torch.fft.fft(head.float(), dim=-1), dim=-2).real.to(prompts.dtype)
        return torch.cat((mixed, prompts[..., k:, :]), dim=-2)


@register(
    "vfpt",
    optimizer="sgd",
    lr=SGD_LR,
    lr_rule=VPT_LR_RULE,
    search=VPT_SPACE,  # VFPT tunes as VPT does (its repo is a fork)
    paper="https://arxiv.org/abs/2411.01327",
    limits={**PROMPT_LIMITS, "fourier_fraction": fraction(include_one=True)},
)
def build(
    model: nn.Module,
    *,
    prompt_length: int = PROMPT_LENGTH,
    fourier_fraction: float = 0.5,
    dropout: float = 0.0,
) -> nn.Module:
    """Visual Fourier Prompt Tuning: VPT-deep with 2-D FFT'd prompts (fraction alpha), plus the head"""
    num_fourier = math.floor(prompt_length * fourier_fraction)  # floor(alpha * p), as the reference
    return prompted(
        model,
        prompt_length=prompt_length,
        deep=True,
        dropout=dropout,
        transform=FourierPrompts(num_fourier),
    )
