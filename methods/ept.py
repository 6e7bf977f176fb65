"""EPT: Embedded Prompt Tuning, learnable prompt logits widen each attention softmax (Zu et al., MedIA 2024, arXiv 2407.01003)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Attention
from torch import nn

from bench.hparam_limits import non_negative, whole
from methods.registry import register
from methods.search import SearchSpace, lr_around


def additive_mask(
    seq_len: int, like: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool
) -> torch.Tensor | None:
    """timm/SDPA mask semantics as an additive float bias over the token keys (None: no mask)."""
    if is_causal:
        return like.new_full((seq_len, seq_len), float("-inf")).triu_(1)
    if attn_mask is None:
        return None
    if attn_mask.dtype == torch.bool:  # True = may attend
        return torch.zeros_like(attn_mask, dtype=like.dtype).masked_fill_(~attn_mask, float("-inf"))
    return attn_mask.to(like.dtype)


class EPTAttention(nn.Module):
    """A timm `Attention` whose softmax also runs over `prompt_length` value-less prompt keys.

    For the layer's prompt P in R^{N x d_p} (one row per token position, shared by heads and
    batch), attention is softmax over [P | q k^T * scale] on the key axis, then attention
    dropout, then the first d_p columns are dropped before multiplying by V (as in the EPT paper).
    The prompts never enter the token sequence, so the sequence length is unchanged.

    Two computations give the same result:

    - `fused=False` (explicit): materialises the widened [B, H, N, d_p + N] attention matrix,
      exactly as written in the paper and the reference code.
    - `fused=True`: because the prompt columns carry no values, P acts only through
      s_i = logsumexp_j P[i, j]. This is one extra "null" key per query row with logit s_i and a
      zero value: SDPA over keys [0 | K] and values [0 | V] with an additive float mask whose
      first column is s_i. A zero key makes q.k = 0 whatever the scale, so the mask value is the
      whole logit. Softmax over [s_i | S_i] gives the kept columns the same probabilities as
      softmax over [P_i | S_i] because sum_j exp(P_ij) = exp(s_i).

    So EPT is a learned per-layer, per-position attention-sink logit: the output of every head
    for token i is scaled by sum_k e^{S_ik} / (sum_k e^{S_ik} + e^{s_i}), in (0, 1). The default
    init (std 0.02, d_p = 100) gives s ~ log(100), so the model is damped, not the pretrained ViT,
    at step 0; P -> -inf recovers the frozen backbone exactly.

    Attention dropout: both paths drop every attention weight independently with the module's
    `attn_drop.p` and rescale by 1/(1-p); the dropped prompt/null columns have no (or zero)
    values, so the kept weights, and hence the output, have the same distribution in both paths.
    Only the random streams differ, so train-mode outputs with p > 0 are not bit-equal. (The
    harness keeps the frozen `attn` in eval mode, so its dropout does not run there anyway.)
    """

    def __init__(
        self,
        attn: Attention,
        *,
        num_tokens: int,
        prompt_length: int,
        init_std: float,
        fused: bool,
        img_size: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.attn = attn  # frozen: qkv, q_norm, k_norm, attn_drop, norm, gate, proj, proj_drop
        self.num_tokens = num_tokens
        self.prompt_length = prompt_length
        self.fused = fused
        self.img_size = img_size
        self.prompt = nn.Parameter(torch.empty(num_tokens, prompt_length))
        nn.init.normal_(self.prompt, std=init_std)

    def extra_repr(self) -> str:
        return (
            f"num_tokens={self.num_tokens}, prompt_length={self.prompt_length}, fused={self.fused}"
        )

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        batch, tokens, _ = x.shape
        if tokens != self.num_tokens:
            size = f" (img size {tuple(self.img_size)})" if self.img_size is not None else ""
            raise ValueError(
                f"EPT prompts were built for {self.num_tokens} tokens{size} but the block got "
                f"{tokens}: prompt rows are tied to token positions, so the input must have the image "
                "size the model was built with (was it resized differently?)"
            )
        a = self.attn
        heads, head_dim = a.num_heads, a.head_dim
        gate = a.gate(x).sigmoid() if getattr(a, "gate", None) is not None else None
        qkv = a.qkv(x).reshape(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = a.q_norm(q), a.k_norm(k)
        # Follow timm: attention dropout is active only while the wrapped attention trains.
        dropout_p = a.attn_drop.p if a.attn_drop.training else 0.0
        bias = additive_mask(tokens, q, attn_mask, is_causal)
        out = self._fused(q, k, v, bias, dropout_p) if self.fused else self._explicit(q, k, v, bias)
        out = out.transpose(1, 2).reshape(batch, tokens, heads * head_dim)
        out = a.norm(out) if hasattr(a, "norm") else out
        if gate is not None:
            out = out * gate
        return a.proj_drop(a.proj(out))

    def _explicit(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        a = self.attn
        B, H, N, _ = q.shape
        logits = (q * a.scale) @ k.transpose(-2, -1)
        if bias is not None:
            logits = logits + bias
        # Prompt logits are not scaled; one row per query position, broadcast over batch/heads.
        prompt = self.prompt.to(logits.dtype).expand(B, H, N, self.prompt_length)
        attn = torch.cat([prompt, logits], dim=-1).softmax(dim=-1)
        attn = a.attn_drop(attn)
        return attn[..., self.prompt_length :] @ v

    def _fused(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None,
        dropout_p: float,
    ) -> torch.Tensor:
        B, H, N, D = q.shape
        s = torch.logsumexp(self.prompt, dim=-1).to(q.dtype)  # [N], one null logit per position
        null = q.new_zeros(B, H, 1, D)
        k = torch.cat([null, k], dim=2)
        v = torch.cat([null, v], dim=2)
        mask = torch.cat([s[:, None], s.new_zeros(N, N)], dim=1)  # [N, 1 + N]
        if bias is not None:
            mask = mask + F.pad(bias, (1, 0))  # the null key is never masked
        qkv_grad = q.requires_grad or k.requires_grad or v.requires_grad
        if q.device.type == "cuda" and mask.requires_grad and not qkv_grad:
            # In the first prompted block only the mask needs a gradient; CUDA SDPA then skips
            # the log-sum-exp its mask backward needs (pytorch/pytorch#148476). Asking for a
            # (discarded) query gradient makes the kernel keep it.
            q = q.detach().requires_grad_(True)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=self.attn.scale
        )


def token_count(model: nn.Module) -> int:
    """Tokens the backbone feeds its blocks at its configured image size (prefix + patches)."""
    return int(model.patch_embed.num_patches) + int(model.num_prefix_tokens)


# Defaults: the reference recipe is SGD lr 6e-4, momentum 0.9, wd 1e-4 at batch 4. Under SGD the
# gradient of each prompt entry is dL/ds_i * softmax(P_i)_j, about dL/ds_i / d_p with the default
# init, so the prompts move ~100x slower than the head: at an SGD lr that trains the head on the
# demo (0.05) the logits s moved by < 0.01 in 10 epochs and EPT was a linear probe on damped
# features (82.8% demo test accuracy). AdamW's per-entry normalisation removes that 1/d_p factor;
# at lr 1e-2 (the linear probe's head lr) the head trains as fast as in the probe and EPT got
# 85.6/86.8/87.2% over seeds 0-2 against the probe's 85.2/84.8/84.8% (3-head demo-vit weights).
# wd 1e-4 is the reference's; it pulls P towards 0, i.e. towards s = log(d_p).
@register(
    "ept",
    lr=1e-2,
    search=SearchSpace.grid(
        lr=lr_around(1e-2),
        hparams={"prompt_length": (5, 10, 20, 50, 100, 200, 400, 600)},
        source="d_p: EPT paper A.1.1; lr: suite",
    ),
    weight_decay=1e-4,
    summary="EPT: per-layer learnable prompt logits (N x d_p) widen the attention softmax; "
    "dropped before V",
    paper="https://arxiv.org/abs/2407.01003",
    limits={"prompt_length": whole(1), "init_std": non_negative()},
)
def build(
    model: nn.Module,
    *,
    prompt_length: int = 100,
    deep: bool = True,
    init_std: float = 0.02,
    fused: bool = True,
) -> nn.Module:
    """Wrap the attention of every block (`deep`) or of block 0 only (EPT-shallow) in place."""
    num_tokens = token_count(model)
    img_size = getattr(model.patch_embed, "img_size", None)
    blocks = list(model.blocks) if deep else list(model.blocks)[:1]
    for i, block in enumerate(blocks):
        if not isinstance(block.attn, Attention):
            raise ValueError(
                f"EPT needs timm Attention in every prompted block; block {i} has "
                f"{type(block.attn).__name__}"
            )
        block.attn = EPTAttention(
            block.attn,
            num_tokens=num_tokens,
            prompt_length=prompt_length,
            init_std=init_std,
            fused=fused,
            img_size=img_size,
        )
    model.get_classifier().requires_grad_(True)
    return model
