"""The built-in demo dataset: synthetic, procedurally generated H&E-like tissue patches.

Nothing here is real patient data. Every image is drawn from a small generative model of
histology: hematoxylin-stained nuclei (ellipses with solid, vesicular or speckled chromatin)
on eosin-stained stroma with white lumen-like holes, rendered to RGB by Beer-Lambert light
absorption. The five demo classes differ only in nuclear MORPHOLOGY and ARRANGEMENT:

- ``round-nuclei``: round, uniform nuclei scattered at random;
- ``spindle-fascicles``: elongated nuclei all pointing the same way;
- ``haphazard-spindles``: elongated nuclei pointing every which way;
- ``glandular``: round nuclei lining the rim of the lumens;
- ``pleomorphic``: irregular, lobulated nuclei of widely varying size.

Everything else (nuclear size, cell density, chromatin pattern, stain colour and strength,
number and size of holes) is a nuisance drawn independently of the class, and each image's
mean colour is shifted to a common value (plus a class-independent jitter), so neither mean
colour nor simple intensity statistics give the label away.

`make_source` draws from the same generative family on its own random stream, with broader
stains and factor combinations the demo never shows (clustered nuclei, spindles around
lumens, ...), labelled by its generative factors; `bench.demo_vit` pretrains on it.
Generation is vectorised numpy and deterministic given the seed.
"""

from __future__ import annotations

import numpy as np

DEMO_CLASSES: tuple[str, ...] = (
    "round-nuclei",
    "spindle-fascicles",
    "haphazard-spindles",
    "glandular",
    "pleomorphic",
)
# Images per class in each split: 1000 / 250 / 250 images in total.
DEMO_SPLIT_SIZES: dict[str, int] = {"train": 200, "val": 50, "test": 50}
IMG_SIZE = 64
# Shown with every result on the demo data (terminal, report, record).
DEMO_NOTICE = "DEMO: synthetic images and a suite-pretrained backbone; not a medical result"

# Source-task factors, one classification head each, in the column order of make_source labels.
SOURCE_FACTORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("shape", ("round", "elongated-aligned", "elongated-random", "irregular")),
    ("layout", ("scattered", "lining-lumens", "clustered")),
    ("chromatin", ("solid", "vesicular", "speckled")),
    ("size", ("small", "medium", "large")),
    ("density", ("sparse", "medium", "dense")),
    ("pleomorphism", ("uniform", "variable")),
)

# Factor codes.
_ROUND, _ALIGNED, _RANDOM_DIR, _IRREGULAR = 0, 1, 2, 3
_SCATTERED, _RINGS, _CLUSTERS = 0, 1, 2
# (shape, layout, pleomorphism) of each demo class.
_DEMO_SPEC = np.array(
    [
        (_ROUND, _SCATTERED, 0),
        (_ALIGNED, _SCATTERED, 0),
        (_RANDOM_DIR, _SCATTERED, 0),
        (_ROUND, _RINGS, 0),
        (_IRREGULAR, _SCATTERED, 1),
    ]
)

# Distinct entropy tags keep the demo and source streams apart whatever seeds callers pass.
_DEMO_TAG = 0xDE30
_SOURCE_TAG = 0x5C0E

_MAX_NUCLEI = 44
_MIN_NUCLEI = 12
_SIZE_RANGE = (2.2, 4.2)  # base nuclear radius, px
_WINDOWS = (4, 6, 8, 10)  # half-widths of the windows nuclei are drawn in, px
_WIN = _WINDOWS[-1]
_PAD = _WIN + 4  # canvas padding so windows never need clipping
_PERM_P = 0.5  # share of source images with permuted stain channels
_CHUNK = 256  # images rendered at once: bounds memory to a few tens of MB

# Ruifrok & Johnston optical-density directions of hematoxylin and eosin.
_H_OD = np.array([0.65, 0.70, 0.29])
_E_OD = np.array([0.07, 0.99, 0.11])
# Every image's mean RGB is moved here (then jittered), so mean colour carries no label.
_TARGET_MEAN = np.array([196.0, 142.0, 196.0])


def _interp_matrix(n_low: int, n_high: int = IMG_SIZE) -> np.ndarray:
    """Bilinear upsampling matrix (n_high, n_low) for smooth noise fields."""
    pos = np.linspace(0, n_low - 1, n_high)
    lo = np.clip(np.floor(pos).astype(int), 0, n_low - 2)
    frac = pos - lo
    m = np.zeros((n_high, n_low))
    m[np.arange(n_high), lo] = 1 - frac
    m[np.arange(n_high), lo + 1] = frac
    return m


_UP6 = _interp_matrix(6)
_UP13 = _interp_matrix(13)


def _smooth_noise(rng: np.random.Generator, n: int, up: np.ndarray) -> np.ndarray:
    """Low-frequency noise in [0, 1]-ish, shape (n, 64, 64)."""
    low = rng.random((n, up.shape[1], up.shape[1]))
    return np.einsum("hi,nij,wj->nhw", up, low, up, optimize=True)


def _place_holes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One or two non-overlapping round holes per image: centres (n,2,2), radii (n,2), on (n,2)."""
    radii = rng.uniform(4.5, 9.5, (n, 2))
    first = rng.uniform(12, 52, (n, 2))
    cand = rng.uniform(10, 54, (n, 6, 2))
    # Room for a ring of the largest nuclei between the two holes.
    need = radii[:, 0, None] + radii[:, 1, None] + 2 * _SIZE_RANGE[1] + 6
    ok = np.linalg.norm(cand - first[:, None], axis=-1) > need
    pick = ok.argmax(axis=1)
    second = cand[np.arange(n), pick]
    on = np.stack([np.ones(n, bool), (rng.random(n) < 0.5) & ok.any(axis=1)], axis=1)
    return np.stack([first, second], axis=1), radii, on


def _scatter_positions(
    rng: np.random.Generator,
    layout: np.ndarray,
    centres: np.ndarray,
    radii: np.ndarray,
    on: np.ndarray,
    margin: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus centres outside the holes: uniform, or around 2-4 cluster centres.

    Returns positions (n, M, 2) and a validity mask (n, M); a slot whose candidates all fall
    into a hole stays empty rather than being pushed to a hole edge (which would look like a rim).
    """
    n, n_cand = len(layout), 4
    uniform = rng.uniform(-2, 66, (n, _MAX_NUCLEI, n_cand, 2))
    cl_centres = rng.uniform(8, 56, (n, 4, 2))
    n_cl = rng.integers(2, 5, n)
    which = rng.integers(0, 4, (n, _MAX_NUCLEI, n_cand)) % n_cl[:, None, None]
    spread = rng.uniform(4.0, 7.0, n)[:, None, None, None]
    clustered = cl_centres[np.arange(n)[:, None, None], which] + spread * rng.normal(
        size=(n, _MAX_NUCLEI, n_cand, 2)
    )
    pos = np.where((layout == _CLUSTERS)[:, None, None, None], clustered, uniform)
    pos = np.clip(pos, -3, 66)
    dist = np.linalg.norm(pos[:, :, :, None] - centres[:, None, None], axis=-1)  # n,M,C,2
    clear = radii[:, None, None] + margin[:, :, None, None] + 1.0
    valid = ((dist > clear) | ~on[:, None, None]).all(axis=-1)  # n,M,C
    first = valid.argmax(axis=-1)
    chosen = np.take_along_axis(pos, first[..., None, None], axis=2)[:, :, 0]
    return chosen, valid.any(axis=-1)


def _render_chunk(
    rng: np.random.Generator,
    shape: np.ndarray,
    layout: np.ndarray,
    pleo: np.ndarray,
    broad_stain: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one chunk of images for given factors; returns (uint8 images, nuisance labels)."""
    n = len(shape)
    m_idx = np.arange(_MAX_NUCLEI)
    chromatin = rng.integers(0, 3, n)
    size = rng.uniform(*_SIZE_RANGE, n)
    count = rng.integers(_MIN_NUCLEI, _MAX_NUCLEI + 1, n)

    # Per-nucleus geometry.
    spread = np.where(pleo == 1, 0.33, 0.07)[:, None]
    s = size[:, None] * np.exp(spread * rng.standard_normal((n, _MAX_NUCLEI)))
    s = np.clip(s, 1.6, 7.0)
    aspect = np.where(
        ((shape == _ALIGNED) | (shape == _RANDOM_DIR))[:, None],
        rng.uniform(2.4, 3.8, (n, _MAX_NUCLEI)),
        np.where(
            (shape == _IRREGULAR)[:, None],
            rng.uniform(1.0, 1.5, (n, _MAX_NUCLEI)),
            rng.uniform(1.0, 1.3, (n, _MAX_NUCLEI)),
        ),
    )
    semi_a = np.minimum(s * np.sqrt(aspect), _WIN - 1.0)
    semi_b = s / np.sqrt(aspect)
    base_dir = rng.uniform(0, np.pi, n)[:, None]
    angle = np.where(
        (shape == _ALIGNED)[:, None],
        base_dir + 0.12 * rng.standard_normal((n, _MAX_NUCLEI)),
        rng.uniform(0, np.pi, (n, _MAX_NUCLEI)),
    )
    lobed = (shape == _IRREGULAR)[:, None]
    lob2 = np.where(lobed, rng.uniform(0.18, 0.32, (n, _MAX_NUCLEI)), 0.0)
    lob3 = np.where(lobed, rng.uniform(0.14, 0.28, (n, _MAX_NUCLEI)), 0.0)
    ph2, ph3 = rng.uniform(0, 2 * np.pi, (2, n, _MAX_NUCLEI))
    # Keep lobes inside the largest drawing window.
    shrink = np.minimum(1.0, (_WIN - 1.0) / (semi_a * (1 + lob2 + lob3)))
    semi_a, semi_b = semi_a * shrink, semi_b * shrink
    nucleolus = rng.uniform(-0.3, 0.3, (n, _MAX_NUCLEI, 2)) * semi_b[..., None]

    # Holes: lumens lined by nuclei in glandular images, empty spaces elsewhere.
    centres, radii, on = _place_holes(rng, n)
    pos, valid = _scatter_positions(rng, layout, centres, radii, on, semi_a)
    ring_total = np.zeros(n, int)
    rings = layout == _RINGS
    if rings.any():
        # Nuclei sit edge-to-edge just outside each lumen, evenly spaced around it.
        ring_r = radii + size[:, None] / np.sqrt(1.15) + 0.6
        per_ring = np.floor(2 * np.pi * ring_r / (2 * size[:, None] + 1.2)).astype(int) * on
        ring_total = np.where(rings, per_ring.sum(axis=1), 0)
        gland = (m_idx[None] >= per_ring[:, :1]).astype(int)
        j = m_idx[None] - gland * per_ring[:, :1]
        k = np.maximum(np.take_along_axis(per_ring, gland, axis=1), 1)
        phase = rng.uniform(0, 2 * np.pi, (n, 2))
        theta = 2 * np.pi * (j + rng.uniform(-0.12, 0.12, j.shape)) / k
        theta = theta + np.take_along_axis(phase, gland, axis=1)
        r = np.take_along_axis(ring_r, gland, axis=1) + 0.5 * rng.standard_normal(j.shape)
        c = centres[np.arange(n)[:, None], gland]
        ring_pos = c + np.stack([r * np.cos(theta), r * np.sin(theta)], axis=-1)
        on_ring = rings[:, None] & (m_idx[None] < ring_total[:, None])
        pos = np.where(on_ring[..., None], ring_pos, pos)
        valid = valid | on_ring
        # The rim is complete even in sparse images; the rest of the count is stroma.
        count = np.where(rings, np.maximum(count, ring_total), count)
    pos = np.clip(pos, -3, 66)
    active = valid & (m_idx[None] < count[:, None])

    # Stain strength and colour (nuisances).
    h_amount = rng.uniform(0.75, 1.15, n)
    jitter = 0.12 if broad_stain else 0.04
    h_od = _H_OD * rng.uniform(0.9, 1.4, (n, 1)) + jitter * rng.standard_normal((n, 3))
    e_od = _E_OD * rng.uniform(0.25, 0.55, (n, 1)) + jitter * 0.7 * rng.standard_normal((n, 3))
    if broad_stain:
        # Half of the source images use other stain pairs (channels permuted), like IHC or
        # special stains: the source domain is wider than the target's.
        perm = np.array([rng.permutation(3) for _ in range(n)])
        swap = rng.random(n) < _PERM_P
        h_od = np.where(swap[:, None], np.take_along_axis(h_od, perm, 1), h_od)
        e_od = np.where(swap[:, None], np.take_along_axis(e_od, perm, 1), e_od)
    h_od, e_od = np.clip(h_od, 0.02, None), np.clip(e_od, 0.02, None)

    # Nuclei: gather the active ones, then draw them in windows sized to each nucleus
    # (bucketed so every bucket is one vectorised pass) and composite with a running max.
    img_i, slot = np.nonzero(active)
    # float32 from here on: float64 transcendental functions are several times slower.
    f32 = np.float32
    pos, angle, semi_a, semi_b = (x.astype(f32) for x in (pos, angle, semi_a, semi_b))
    lob2, lob3, ph2, ph3 = (x.astype(f32) for x in (lob2, lob3, ph2, ph3))
    nucleolus, h_amount = nucleolus.astype(f32), h_amount.astype(f32)
    extent = semi_a[img_i, slot] * (1 + lob2[img_i, slot] + lob3[img_i, slot])
    half = np.searchsorted(np.array(_WINDOWS), np.ceil(extent + 1.0))
    half = np.array(_WINDOWS)[np.minimum(half, len(_WINDOWS) - 1)]
    side = IMG_SIZE + 2 * _PAD
    canvas = np.zeros(n * side * side, np.float32)
    for w in _WINDOWS:
        pick = half == w
        if not pick.any():
            continue
        ii, mm = img_i[pick], slot[pick]
        k = len(ii)
        off = np.arange(-w, w + 1)
        cx, cy = pos[ii, mm, 0], pos[ii, mm, 1]
        fx, fy = np.floor(cx), np.floor(cy)
        ix, iy = fx.astype(int), fy.astype(int)
        dx = off[None, None, :].astype(f32) - (cx - fx)[:, None, None]
        dy = off[None, :, None].astype(f32) - (cy - fy)[:, None, None]
        ca = np.cos(angle[ii, mm])[:, None, None]
        sa = np.sin(angle[ii, mm])[:, None, None]
        u = dx * ca + dy * sa
        v = dy * ca - dx * sa
        b = semi_b[ii, mm, None, None]
        un = u / semi_a[ii, mm, None, None]
        vn = v / b
        rho = np.sqrt(un * un + vn * vn)
        lob = np.nonzero(lobed[ii, 0])[0]
        if len(lob):
            # Lobulated outline: the radius varies with the 2nd and 3rd angular harmonics.
            th = np.arctan2(vn[lob], un[lob])
            rim = 1 + lob2[ii[lob], mm[lob], None, None] * np.cos(
                2 * th + ph2[ii[lob], mm[lob], None, None]
            )
            rim += lob3[ii[lob], mm[lob], None, None] * np.cos(
                3 * th + ph3[ii[lob], mm[lob], None, None]
            )
            rho[lob] /= rim
        # About one pixel of anti-aliased edge.
        alpha = np.clip((1 - rho) * b + 0.5, 0, 1)
        noise = rng.random((k, 2 * w + 1, 2 * w + 1), dtype=np.float32)
        kind = chromatin[ii]
        speckled = np.where(noise > 0.55, f32(1.0), f32(0.3))
        dens = np.where(kind[:, None, None] == 0, 0.88 + 0.12 * noise, speckled)
        ves = np.nonzero(kind == 1)[0]
        if len(ves):
            # Vesicular: pale centre, dark rim, one nucleolus.
            nu = u[ves] - nucleolus[ii[ves], mm[ves], 0, None, None]
            nv = v[ves] - nucleolus[ii[ves], mm[ves], 1, None, None]
            rim_v = np.clip((rho[ves] - 0.5) / 0.35, 0, 1)
            dens[ves] = 0.3 + 0.6 * rim_v + 0.7 * np.exp(-(nu * nu + nv * nv))
        val = alpha * dens * h_amount[ii, None, None]
        rows = (iy + _PAD)[:, None, None] + off[None, :, None]
        cols = (ix + _PAD)[:, None, None] + off[None, None, :]
        flat = (ii[:, None, None] * side + rows) * side + cols
        np.maximum.at(canvas, flat.ravel(), val.ravel())
    canvas = canvas.reshape(n, side, side)
    hema = canvas[:, _PAD:-_PAD, _PAD:-_PAD]

    # Stroma: patchy eosin with finer fibre-like texture; holes are nearly empty.
    eosin = 0.55 + 0.3 * _smooth_noise(rng, n, _UP6) + 0.25 * _smooth_noise(rng, n, _UP13)
    eosin = eosin.astype(f32)
    centres, radii = centres.astype(f32), radii.astype(f32)
    grid = np.arange(IMG_SIZE, dtype=f32) + 0.5
    d_hole = np.sqrt(
        (grid[None, None, None, :] - centres[:, :, 0, None, None]) ** 2
        + (grid[None, None, :, None] - centres[:, :, 1, None, None]) ** 2
    )
    hole = np.clip(radii[:, :, None, None] - d_hole + 0.5, 0, 1) * on[:, :, None, None]
    hole = hole.max(axis=1)
    eosin = eosin * (1 - 0.9 * hole)
    hema = hema * (1 - hole)

    h_od, e_od = h_od.astype(f32)[:, None, None], e_od.astype(f32)[:, None, None]
    od = hema[..., None] * h_od + eosin[..., None] * e_od + 0.02
    rgb = 255.0 * np.exp(-od) + 2.5 * rng.standard_normal(od.shape, dtype=f32)
    # Stain normalisation: shift each image's mean colour to a common target, then add a
    # class-independent jitter so that residual clipping effects cannot carry the label.
    rgb = rgb - rgb.mean(axis=(1, 2), keepdims=True) + _TARGET_MEAN.astype(f32)
    rgb = rgb + rng.normal(0, 5.0, (n, 1, 1, 3)).astype(f32)
    images = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

    # Nuisance factors binned for the source task's heads.
    lo, hi = _SIZE_RANGE
    size_bin = np.clip(((size - lo) / (hi - lo) * 3).astype(int), 0, 2)
    n_active = active.sum(axis=1)
    density_bin = np.digitize(n_active, [22, 33])
    return images, np.stack([chromatin, size_bin, density_bin], axis=1)


def _render(
    rng: np.random.Generator,
    shape: np.ndarray,
    layout: np.ndarray,
    pleo: np.ndarray,
    broad_stain: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Render in chunks, each with its own child stream, to bound memory."""
    images, nuisance = [], []
    starts = range(0, len(shape), _CHUNK)
    for start, child in zip(starts, rng.spawn(len(starts)), strict=True):
        sl = slice(start, start + _CHUNK)
        img, nui = _render_chunk(child, shape[sl], layout[sl], pleo[sl], broad_stain)
        images.append(img)
        nuisance.append(nui)
    if not images:
        return np.zeros((0, IMG_SIZE, IMG_SIZE, 3), np.uint8), np.zeros((0, 3), np.int64)
    return np.concatenate(images), np.concatenate(nuisance)


def make_demo(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The demo splits: {"train"|"val"|"test": (uint8 images [N,64,64,3], int64 labels [N])}.

    Class-balanced (200/50/50 images per class); each split has its own random stream, so no
    image is shared between splits.
    """
    root = np.random.SeedSequence([_DEMO_TAG, seed])
    out = {}
    for (split, per_class), child in zip(DEMO_SPLIT_SIZES.items(), root.spawn(3), strict=True):
        rng = np.random.default_rng(child)
        labels = rng.permutation(np.repeat(np.arange(len(DEMO_CLASSES)), per_class))
        shape, layout, pleo = _DEMO_SPEC[labels].T
        images, _ = _render(rng, shape, layout, pleo, broad_stain=False)
        out[split] = (images, labels.astype(np.int64))
    return out


def make_source(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The pretraining source task: n images and their generative factors.

    Returns uint8 images [n,64,64,3] and int64 labels [n, len(SOURCE_FACTORS)], one column per
    factor (shape, layout, chromatin, size, density, pleomorphism; see SOURCE_FACTORS). Factors
    are drawn independently (so combinations the demo never shows appear), stains are broader,
    and the random stream is disjoint from make_demo's.
    """
    rng = np.random.default_rng(np.random.SeedSequence([_SOURCE_TAG, seed]))
    shape = rng.integers(0, 4, n)
    layout = rng.integers(0, 3, n)
    pleo = rng.integers(0, 2, n)
    images, nuisance = _render(rng, shape, layout, pleo, broad_stain=True)
    labels = np.column_stack([shape, layout, nuisance, pleo]).astype(np.int64)
    return images, labels
