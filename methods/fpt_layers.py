"""FPT+ and FPT's two building blocks (methods/fpt.py assembles them): the tap that keeps a frozen
attention layer's most-attended keys and values, and the fusion module whose learnable prompts
cross-attend to them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KVTap(nn.Module):
    """A frozen timm `Attention` computed explicitly, so that its attention probabilities exist
    (fused SDPA does not return them), which keeps each head's most-attended keys and values.

    The output is the wrapped module's own; `kv` holds ([B,H,keep,hd], [B,H,keep,hd]) after a call.
    """

    def __init__(self, attn: nn.Module, *, token_ratio: float, importance: str) -> None:
        super().__init__()
        self.attn = attn
        self.token_ratio = token_ratio
        self.importance = importance
        self.kv: tuple[torch.Tensor, torch.Tensor] | None = None

    def keep(self, tokens: int) -> int:
        return max(int(tokens * self.token_ratio), 1)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("FPT taps do not support attention masks")
        a = self.attn
        B, N, _ = x.shape
        qkv = a.qkv(x).reshape(B, N, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = a.q_norm(q), a.k_norm(k)
        probs = ((q * a.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # [B,H,N,N]
        # Importance of key token j: mean attention it receives over all queries ("global"),
        # or the class token's attention to it ("cls"); chosen per head independently.
        score = probs.mean(dim=-2) if self.importance == "global" else probs[:, :, 0]
        idx = score.topk(self.keep(N), dim=-1).indices[..., None].expand(-1, -1, -1, a.head_dim)
        self.kv = (k.gather(2, idx), v.gather(2, idx))
        out = (probs @ v).transpose(1, 2).reshape(B, N, -1)
        # Older timm releases (1.0.9, the floor) have no post-attention norm or gate: skip them.
        if getattr(a, "norm", None) is not None:
            out = a.norm(out)
        if getattr(a, "gate", None) is not None:
            out = out * a.gate(x).sigmoid()
        return a.proj_drop(a.proj(out))


class FusionModule(nn.Module):
    """Learnable prompts cross-attend to the LPM's kept keys/values; one Linear to the side width.

    FPT+: query = LayerNorm(P) (P is 768-d), residual P added before `out_proj`.
    FPT:  query = Linear(P) from a side-width P, residual P added after `out_proj`.
    """

    def __init__(
        self,
        *,
        layers: int,
        lpm_dim: int,
        side_dim: int,
        num_heads: int,
        num_prompts: int,
        prompt_dim: int,
        prompt_norm: bool,
        prompt_proj: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        if not prompt_proj and prompt_dim != lpm_dim:
            raise ValueError("a prompt width other than the LPM's needs a prompt projection")
        self.num_heads = num_heads
        self.prompts = nn.Parameter(torch.empty(layers, num_prompts, prompt_dim))
        nn.init.normal_(self.prompts, std=1e-6)  # reference init N(0, 1e-6^2)
        self.norm = nn.LayerNorm(prompt_dim) if prompt_norm else nn.Identity()
        self.proj = nn.Linear(prompt_dim, lpm_dim) if prompt_proj else nn.Identity()
        self.out_proj = nn.Linear(lpm_dim, side_dim)
        self.dropout = nn.Dropout(dropout)
        # FPT+ (prompts at the LPM width) adds them before out_proj, FPT after it.
        self.residual_first = prompt_dim == lpm_dim

    def forward(self, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """k, v: [B, L, H, T, hd] -> fine-grained prompts [B, L, P, side_dim]."""
        B, L, H, T, hd = k.shape
        P = self.prompts.shape[1]
        q = self.proj(self.norm(self.prompts))  # [L, P, D]
        q = q.view(L, P, H, hd).transpose(1, 2)  # [L, H, P, hd]
        q = q.unsqueeze(0).expand(B, -1, -1, -1, -1).reshape(B * L, H, P, hd)
        k, v = (t.to(q.dtype).reshape(B * L, H, T, hd) for t in (k, v))
        # softmax(q k^T / sqrt(hd)) v: the LPM's own keys and values, no learnable projections.
        ctx = F.scaled_dot_product_attention(q, k, v)
        ctx = ctx.view(B, L, H, P, hd).transpose(2, 3).reshape(B, L, P, H * hd)
        prompts = self.prompts.unsqueeze(0)
        out = self.out_proj(ctx + prompts) if self.residual_first else self.out_proj(ctx) + prompts
        return self.dropout(out)
