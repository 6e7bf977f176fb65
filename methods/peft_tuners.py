"""The HF peft tuners (LoRA and the others) that adapt a timm ViT's Linear or LayerNorm layers: one table row each.

Every row injects its tuner with `methods.peft_inject.inject_peft`: anchored regex targets
(so `patch_embed.proj` is never wrapped), the backbone frozen, adapter tensors and the head
trainable. Defaults are peft's own where they suit a ViT; where a default cannot hold on every
backbone the suite uses (the 32-wide test ViT, the 96-wide demo-vit, the 768-wide ViT-B), it is
changed to one that does, and the row's notes say so.

Start from the pretrained function (adapted logits == backbone logits at step 0): lora, dora,
loha, lokr, ia3, vera, fourierft (zero spectrum chosen here), boft, oft, hra, ln_tuning,
randlora, shira, road, miss, delora, waveft. Not from it: c3a (peft initialises its kernel
xavier-uniform, a small but non-zero update).

A row's `min_peft` is the first peft release it works with (each row built, trained a step and
merged on peft 0.6.2-0.21.0; 0.16 and 0.17, which do not import beside transformers 5, read from
their source); a row without one works from `PEFT_FLOOR`. On an older peft the row
is registered unavailable and says what it needs. OFT's config is older than its 0.16.0, but
before 0.16 peft stored whole rotation blocks rather than their skew-symmetric half (twice the
pinned trainable count); DoRA is LoRA's `use_dora` (0.9.0).

peft 0.21.2 tuners NOT registered, and why:
- adalora: its rank budget is re-allocated by `update_and_allocate(step)`, which the training
  loop must call each step, and it needs the total step count at build time; the shared
  harness does neither, so it would silently be a plain SVD-form LoRA.
- vblora, tinylora, unilora, pvera, frod: shared-state tuners like VeRA; they run through the
  same path (checked on a tiny ViT; vblora needs vector_length to divide every in_features, so
  32 rather than peft's 256) but are not registered yet.
- poly, xlora: need task ids or a multi-adapter router; prompt_tuning, prefix_tuning, p_tuning,
  multitask_prompt_tuning, cpt, cartridge, adaption_prompt: token-embedding/LLM-only, not for
  Linear layers (VPT covers prompts for ViTs); trainable_tokens: embedding-row tuning, no
  embedding matrix in a ViT; shadow: peft refuses it in `inject_adapter_in_model`.
- adamss, beft, deft, glora, gralora, hira, lily, osf, peanut, psoft, supertuning: they run on
  timm Linear layers (checked) but are not registered yet; each is one more row below.
"""

from __future__ import annotations

from bench.hparam_limits import Limit, Names, OneOf, fraction, positive, whole
from methods.peft_checks import (
    LORA_TARGET_NAMES,
    LORA_TARGETS,
    c3a_auto_block,
    ia3_feedforward,
    inject_boft,
    inject_ln_tuning,
    inject_split_lora,
    miss_fits,
    shira_fits,
    spectrum_fits,
)
from methods.peft_inject import LINEAR_TARGETS, Knob, PeftTuner, register_tuners, targets
from methods.search import SearchSpace, lr_around

# LayerNorms of a timm ViT, for LN-tuning: each block's two and the final one (top-level `norm`).
NORM_TARGETS: dict[str, tuple[str, ...]] = {
    "norm1": (r"blocks\.\d+\.norm1",),
    "norm2": (r"blocks\.\d+\.norm2",),
    "norm": (r"norm",),
}


# The knobs most tuners share, with the peft config field each sets.
def rank(default: int, config: str = "r", limit: Limit | None = None) -> Knob:
    return Knob("rank", default, config, limit or whole(1))


# HRA initialises its reflections in cancelling pairs: an even count.
HRA_RANK = whole(2, even=True)


def alpha(default: float, config: str) -> Knob:
    return Knob("alpha", default, config, positive())


def dropout(config: str) -> Knob:
    return Knob("dropout", 0.0, config, fraction())


TUNERS: tuple[PeftTuner, ...] = (
    PeftTuner(
        "lora",
        "LoraConfig",
        lr=1e-3,
        summary="LoRA (peft): rank-r updates (α/r)·B·A on the blocks' fused qkv (targets=q,v: "
        "the paper's separate W_q and W_v), plus the head",
        paper="https://arxiv.org/abs/2106.09685",
        notes="LoRA (Hu et al., ICLR 2022) on the fused qkv by default: Q, K and V share one "
        "down-projection A (section 4) and K changes too. targets=q,v is the paper's form (and "
        "EPT's LoRA): each block's qkv is split into q, k and v Linears, W_q and W_v get "
        "independent rank-r updates and W_k none; same count per block, r·(D + 3·D) = "
        "2·r·(D + D). Merging fuses qkv back (a plain timm ViT). q, k, v cannot be combined with "
        "qkv, attn or all.",
        knobs=(rank(8), alpha(8.0, "lora_alpha"), dropout("lora_dropout"), targets()),
        fixed={"bias": "none"},
        vocabulary=LORA_TARGETS,
        target_names=LORA_TARGET_NAMES,
        inject=inject_split_lora,
        search=SearchSpace.grid(
            lr=lr_around(1e-3),
            hparams={"rank": (1, 4, 8, 32, 64)},
            source="rank: EPT's LoRA grid {1, 4, 8, 32, 64}; lr: suite",
        ),
    ),
    PeftTuner(
        "dora",
        "LoraConfig",
        min_peft="0.9.0",
        lr=1e-3,
        summary="DoRA (peft): LoRA direction update plus a trainable per-output magnitude, on qkv",
        paper="https://arxiv.org/abs/2402.09353",
        notes="W' = m · (W + (α/r)·B·A) / ||W + (α/r)·B·A||_col; m starts at ||W||, B at 0.",
        knobs=(rank(8), alpha(8.0, "lora_alpha"), dropout("lora_dropout"), targets()),
        fixed={"use_dora": True},
    ),
    PeftTuner(
        "loha",
        "LoHaConfig",
        lr=1e-3,
        summary="LoHa (peft): Hadamard product of two rank-r factorisations, on qkv",
        paper="https://arxiv.org/abs/2108.06098",
        notes="ΔW = (α/r)·(B1·A1) ⊙ (B2·A2): rank up to r², at twice LoRA's cost per rank (peft "
        "defaults).",
        knobs=(rank(8), alpha(8.0, "alpha"), targets()),
    ),
    PeftTuner(
        "lokr",
        "LoKrConfig",
        lr=1e-3,
        summary="LoKr (peft): Kronecker product of a small dense factor and a rank-r factor, on qkv",
        paper="https://arxiv.org/abs/2309.14859",
        notes="ΔW = (α/r)·W1 ⊗ (B·A); decompose_factor -1 splits each dimension near its square "
        "root.",
        knobs=(
            rank(8),
            alpha(8.0, "alpha"),
            Knob(
                "decompose_factor", -1, "decompose_factor", whole(1, also=(-1,), note="-1 = auto")
            ),
            targets(),
        ),
    ),
    PeftTuner(
        "ia3",
        "IA3Config",
        lr=3e-3,
        summary="(IA)³ (peft): learned scaling of qkv outputs and of the MLP hidden units (fc2 "
        "input)",
        paper="https://arxiv.org/abs/2205.05638",
        notes="(IA)³ rescales K, V and the FFN hidden activation with vectors initialised to ones. "
        "peft scales a targeted layer's OUTPUT, or its INPUT for those listed in `feedforward`. So "
        "`qkv` gives l_k and l_v (and, since timm fuses qkv, a scale on q too) and `fc2` as a "
        "feed-forward module gives the paper's l_ff on the 4·D hidden units after GELU.",
        knobs=(
            targets("qkv,fc2"),
            Knob("feedforward", "fc2", limit=Names(tuple(LINEAR_TARGETS), empty=True)),
        ),
        prepare=ia3_feedforward,
    ),
    PeftTuner(
        "vera",
        "VeraConfig",
        min_peft="0.11.0",
        lr=1e-2,
        summary="VeRA (peft): frozen shared random A,B; trains per-layer scaling vectors d and b, "
        "on qkv",
        paper="https://arxiv.org/abs/2310.11454",
        notes="ΔW = Λ_b·B·Λ_d·A with A, B frozen random (seeded, shared by all layers), b = 0.",
        knobs=(
            rank(256),
            Knob("d_initial", 0.1, "d_initial", positive()),
            dropout("vera_dropout"),
            targets(),
        ),
        fixed={"projection_prng_key": 0},
    ),
    PeftTuner(
        "fourierft",
        "FourierFTConfig",
        min_peft="0.12.0",
        lr=1e-2,
        summary="FourierFT (peft): n trainable spectral coefficients per layer, ΔW = "
        "scaling·Re(IDFT), on qkv",
        paper="https://arxiv.org/abs/2405.03003",
        notes="ΔW = scaling · Re(ifft2(S)), S zero except n fixed random entries (seed 777) that "
        "train. zero_init=True (a change from the paper's and peft's N(0,1) spectrum): ifft2 "
        "divides by d_in·d_out, so the random start is a sizeable perturbation on small layers "
        "(demo-vit, tests), while a zero start keeps the pretrained function and still trains (ΔW "
        "is linear in S). With AdamW, `scaling` sets the step size of ΔW independently of the "
        "head's learning rate.",
        knobs=(
            Knob("n_frequency", 1000, "n_frequency", whole(1)),
            Knob("scaling", 150.0, "scaling", positive()),
            Knob("zero_init", True, "init_weights"),
            targets(),
        ),
        prepare=spectrum_fits,
    ),
    PeftTuner(
        "boft",
        "BOFTConfig",
        min_peft="0.11.0",
        lr=3e-3,
        summary="BOFT (peft): butterfly-factorised orthogonal rotation of qkv's input side, plus "
        "output scales",
        paper="https://arxiv.org/abs/2311.06243",
        notes="W' = (W·R)·diag(s), R a product of `butterfly_factor` block-diagonal Cayley "
        "rotations (R = I, s = 1 at init); peft's defaults (block 4, one factor).",
        knobs=(
            Knob("block_size", 4, "boft_block_size", whole(1)),
            Knob("butterfly_factor", 1, "boft_n_butterfly_factor", whole(1)),
            dropout("boft_dropout"),
            targets(),
        ),
        inject=inject_boft,
    ),
    PeftTuner(
        "oft",
        "OFTConfig",
        min_peft="0.16.0",
        lr=3e-3,
        summary="OFT (peft): block-diagonal orthogonal (Cayley) rotation of qkv's input side",
        paper="https://arxiv.org/abs/2306.07280",
        notes="W' = W·R, R block-diagonal with skew-symmetric-parametrised blocks (R = I at init). "
        "peft's default block size 32 divides every ViT width used here (32, 96, 768); r is "
        "derived from it.",
        knobs=(Knob("block_size", 32, "oft_block_size", whole(1)), targets()),
        fixed={"r": 0},
    ),
    PeftTuner(
        "hra",
        "HRAConfig",
        min_peft="0.12.0",
        lr=3e-3,
        summary="HRA (peft): a chain of r Householder reflections applied to qkv's weight",
        paper="https://arxiv.org/abs/2405.17484",
        notes="W' = W·Π(I − 2 u_i u_iᵀ/||u_i||²); peft starts with pairs of equal u's, so the "
        "product is I.",
        knobs=(rank(8, limit=HRA_RANK), Knob("gram_schmidt", False, "apply_GS"), targets()),
    ),
    PeftTuner(
        "ln_tuning",
        "LNTuningConfig",
        min_peft="0.11.0",
        lr=3e-3,
        summary="LN-tuning (peft): trains every LayerNorm's scale and shift (a trained copy), plus "
        "the head",
        paper="https://arxiv.org/abs/2312.11420",
        notes="Each targeted LayerNorm is replaced by a trainable copy: norm1, norm2 per block, "
        "final norm.",
        knobs=(targets("norm1,norm2,norm"),),
        vocabulary=NORM_TARGETS,
        inject=inject_ln_tuning,
    ),
    PeftTuner(
        "randlora",
        "RandLoraConfig",
        min_peft="0.16.0",
        lr=3e-3,
        summary="RandLoRA (peft): full-rank update from frozen random low-rank bases, trained "
        "scalings",
        paper="https://arxiv.org/abs/2502.00987",
        notes="ΔW = (α/r)·Σ_i B_i Λ_i A_i Γ_i over min(d_in,d_out)/r frozen random rank-r bases "
        "(peft defaults, α = 20·r as peft advises); Λ starts at 0, so ΔW = 0 at init.",
        knobs=(rank(32), alpha(640.0, "randlora_alpha"), targets()),
        fixed={"projection_prng_key": 0},
    ),
    PeftTuner(
        "shira",
        "ShiraConfig",
        min_peft="0.17.0",
        lr=1e-3,
        summary="SHiRA (peft): trains a fixed random sparse subset of qkv's weight entries",
        paper="https://arxiv.org/abs/2406.13175",
        notes="ΔW is sparse with r·(d_in+d_out) trainable entries (LoRA rank r's budget), starting "
        "at 0. rank 8 instead of peft's 32: 32 asks for more entries than a 32-wide test ViT's qkv "
        "has, and 8 gives the same budget as the `lora` default.",
        knobs=(rank(8), targets()),
        fixed={"mask_type": "random"},
        prepare=shira_fits,
    ),
    PeftTuner(
        "c3a",
        "C3AConfig",
        min_peft="0.16.0",
        lr=1e-2,
        summary="C3A (peft): block-circular-convolution update of qkv (high rank, few parameters)",
        paper="https://arxiv.org/abs/2407.19342",
        notes="ΔW is block-circulant: (d_out/b)·(d_in/b) kernels of length b, applied by FFT, "
        "divided by d_in. block_size 0 picks the greatest common divisor of the targeted layers' "
        "sizes, peft's suggested starting point (768 on ViT-B/16 qkv, 96 on demo-vit). peft's "
        "xavier-uniform kernel init is kept, so the model does not start exactly at the pretrained "
        "function.",
        knobs=(Knob("block_size", 0, limit=whole(0, note="0 = auto")), targets()),
        prepare=c3a_auto_block,
    ),
    PeftTuner(
        "road",
        "RoadConfig",
        min_peft="0.18.0",
        lr=3e-3,
        summary="RoAd (peft): learned 2-D rotations and scalings of pairs of qkv's output features",
        paper="https://arxiv.org/abs/2409.00119",
        notes="y' = R(θ)·α ⊙ y on feature pairs; θ = 0, α = 1 at init (identity). group_size 32 "
        "(peft: 64) divides every output width used here (96, 288, 2304, 32, ...).",
        knobs=(
            Knob("variant", "road_1", "variant", OneOf(("road_1", "road_2", "road_4"))),
            Knob("group_size", 32, "group_size", whole(2, even=True)),
            targets(),
        ),
    ),
    PeftTuner(
        "miss",
        "MissConfig",
        min_peft="0.17.0",
        lr=1e-3,
        summary="MiSS (peft): one shared trainable r-column shard expanded over qkv's weight",
        paper="https://arxiv.org/abs/2409.15371",
        notes="ΔW tiles one d_out×r shard D (zero at init) across the input dimension. rank 8 "
        "instead of peft's 64: 64 exceeds the 32-wide test ViT, and 8 costs about LoRA r=8.",
        knobs=(rank(8), targets()),
        prepare=miss_fits,
    ),
    PeftTuner(
        "delora",
        "DeloraConfig",
        min_peft="0.18.0",
        lr=1e-3,
        summary="DeLoRA (peft): LoRA with normalised rank-one terms and a learnable norm bound λ, "
        "on qkv",
        paper="https://arxiv.org/abs/2503.18225",
        notes="ΔW = (λ/r)·Σ_i (b_i/||b_i||)(a_i/||a_i||)ᵀ·diag(||W_:,j||), λ trainable; B = 0 at "
        "init. λ = 3 instead of peft's 15: with B starting at 0, the normalisation makes the FIRST "
        "step jump ΔW to its full size, about λ/√(r·d_in) of ||W||: 0.08 for 15 on a 4096-wide LLM "
        "layer, but 0.54 on the 96-wide demo-vit, where test accuracy fell to 80 % (λ = 3: 84 %, "
        "λ = 1: 85 %). λ = 3 gives 0.04 on ViT-B/16.",
        knobs=(
            rank(8),
            Knob("delora_lambda", 3.0, "delora_lambda", positive()),
            targets(),
        ),
    ),
    PeftTuner(
        "waveft",
        "WaveFTConfig",
        min_peft="0.18.0",
        lr=1e-3,
        summary="WaveFT (peft): n trainable wavelet coefficients per layer, ΔW = scaling·IDWT, on "
        "qkv",
        paper="https://arxiv.org/abs/2505.12532",
        notes="ΔW = scaling · IDWT(S), S zero except n fixed random entries (seed 777) that train "
        "(peft defaults: db1 wavelet, zero init). Under AdamW the step of ΔW scales with "
        "scaling·lr, and the lr is shared with the head: peft's scaling 25 diverged on the demo at "
        "lr 1e-2 (42 %) and gave 83 % at 1e-3; scaling 2.5 at lr 1e-3 (the adapter steps of 25 at "
        "1e-4) gave 84 %.",
        knobs=(
            Knob("n_frequency", 2592, "n_frequency", whole(1)),
            Knob("scaling", 2.5, "scaling", positive()),
            targets(),
        ),
        prepare=spectrum_fits,
    ),
)

register_tuners(TUNERS)
