"""Deterministic procedural generator of 32×32 grey-scale surface patches with defects.

The bundled default models (``defects`` and ``defects-light``) are trained and evaluated on the
images made here. The generator uses numpy only, so tests and nodes can regenerate the held-out
set without torch.

Contract:

- ``generate(seed, n)`` returns the same bytes for the same ``(seed, n)`` on the same numpy
  build: every random draw comes from one ``numpy.random.Generator(PCG64(seed))``, in a fixed
  order, with no global state. (Different ``n`` with the same seed gives a different set, not a
  prefix.)
- Images are float32 ``[n, 1, 32, 32]`` in ``[0, 1]``; labels are int64 indices into ``LABELS``;
  ``hard`` marks a defect that is low-contrast or small. "ok" patches are never hard.
- Classes are balanced: ``n // 4`` of each, the remainder spread over the first classes.
- Training uses seeds ``TRAIN_SEED + i`` (``0 <= i < TRAIN_SEED_SPAN``), threshold selection
  ``VAL_SEED``, evaluation ``TEST_SEED`` with ``TEST_SIZE`` images: the ranges are disjoint.

What a patch looks like:

- background: a base grey level, a linear gradient, a broad illumination hot/cold spot, low
  frequency mottle, a brushed texture (noise smeared along one axis) and per-pixel grain;
- ``scratch``: a thin straight or slightly bent line;
- ``spot``: a soft elliptical blob, sometimes with a second lobe;
- ``crack``: a thin jagged path (random perpendicular offsets), often with a branch.

Defects are darker or brighter than the background by a random contrast.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

LABELS: tuple[str, ...] = ("ok", "scratch", "spot", "crack")
SIZE = 32

TRAIN_SEED = 1_000
TRAIN_SEED_SPAN = 1_000
VAL_SEED = 5_000
TEST_SEED = 9_000
TEST_SIZE = 4_000

HARD_FRACTION = 0.25
"""Share of defect patches that are hard (half low-contrast, half small)."""
CONTRAST = (0.15, 0.40)
LOW_CONTRAST = (0.07, 0.11)
DARK_FRACTION = 0.7

SEGMENTS = 8
"""Segments per polyline (scratches and cracks are drawn as polylines)."""
_CHUNK = 256
"""Images per chunk when rendering strokes (bounds memory to a few tens of MB)."""

_OK, _SCRATCH, _SPOT, _CRACK = range(4)


class Dataset(NamedTuple):
    """A generated set: ``images`` float32 [n,1,32,32] in [0,1], ``labels`` int64 [n],
    ``hard`` bool [n]."""

    images: np.ndarray
    labels: np.ndarray
    hard: np.ndarray


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), each [32, 32], in pixels."""
    ys, xs = np.meshgrid(
        np.arange(SIZE, dtype=np.float64), np.arange(SIZE, dtype=np.float64), indexing="ij"
    )
    return ys, xs


def _upsample_matrix(nodes: int) -> np.ndarray:
    """[SIZE, nodes] linear-interpolation weights from ``nodes`` evenly spaced samples."""
    pos = np.linspace(0, nodes - 1, SIZE)
    eye = np.eye(nodes)
    return np.stack([np.interp(pos, np.arange(nodes), eye[k]) for k in range(nodes)], axis=1)


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    """Textured, unevenly lit backgrounds, float64 [n, 32, 32]."""
    ys, xs = _grid()
    yn, xn = ys / (SIZE - 1), xs / (SIZE - 1)
    base = rng.uniform(0.3, 0.7, n)
    theta = rng.uniform(0.0, 2 * np.pi, n)
    grad_amp = rng.uniform(0.0, 0.3, n)
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    grad = grad_amp[:, None, None] * (xn * cos + yn * sin - 0.5 * (cos + sin))

    cx, cy = rng.uniform(-0.3, 1.3, n), rng.uniform(-0.3, 1.3, n)
    ill_sigma = rng.uniform(0.35, 0.8, n)
    ill_amp = rng.uniform(-0.15, 0.2, n)
    r2 = (xn - cx[:, None, None]) ** 2 + (yn - cy[:, None, None]) ** 2
    illum = ill_amp[:, None, None] * np.exp(-r2 / (2 * ill_sigma[:, None, None] ** 2))

    up = _upsample_matrix(5)
    mottle = up @ rng.normal(0.0, 1.0, (n, 5, 5)) @ up.T
    mottle *= rng.uniform(0.0, 0.04, n)[:, None, None]

    smear = 9
    raw = rng.normal(0.0, 1.0, (n, SIZE, SIZE + smear))
    csum = np.cumsum(raw, axis=2)
    brushed = (csum[:, :, smear:] - csum[:, :, :-smear]) / np.sqrt(smear)
    vertical = rng.random(n) < 0.5
    brushed[vertical] = brushed[vertical].transpose(0, 2, 1)
    brushed *= (rng.uniform(0.0, 0.02, n) * (rng.random(n) < 0.6))[:, None, None]

    grain = rng.normal(0.0, 1.0, (n, SIZE, SIZE)) * rng.uniform(0.005, 0.025, n)[:, None, None]
    return base[:, None, None] + grad + illum + mottle + brushed + grain


def _polylines(
    rng: np.random.Generator, labels: np.ndarray, small: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices [n, 2, SEGMENTS+1, 2] (polyline, vertex, (y, x)), polyline mask [n, 2] and
    stroke width sigma [n] for every image (used only for scratches and cracks)."""
    n = labels.shape[0]
    k = SEGMENTS
    t = np.linspace(0.0, 1.0, k + 1)[None, :]
    centre = rng.uniform(8.0, 24.0, (n, 2))
    phi = rng.uniform(0.0, np.pi, n)
    direction = np.stack([np.sin(phi), np.cos(phi)], axis=1)[:, None, :]
    perp = np.stack([np.cos(phi), -np.sin(phi)], axis=1)[:, None, :]

    scratch_len = np.where(small, rng.uniform(6.0, 10.0, n), rng.uniform(12.0, 28.0, n))
    bend = rng.uniform(-0.15, 0.15, n) * scratch_len
    crack_len = np.where(small, rng.uniform(8.0, 12.0, n), rng.uniform(14.0, 30.0, n))
    jag = rng.uniform(1.2, 2.0, n)
    jitter = rng.normal(0.0, 1.0, (n, k + 1))
    has_branch = (rng.random(n) < 0.6) & ~small
    branch_at = rng.integers(3, 6, n)
    branch_turn = rng.uniform(0.5, 1.2, n) * np.where(rng.random(n) < 0.5, -1.0, 1.0)
    branch_frac = rng.uniform(0.3, 0.6, n)
    branch_jitter = rng.normal(0.0, 1.0, (n, k + 1))
    width = np.where(labels == _CRACK, rng.uniform(0.55, 0.95, n), rng.uniform(0.45, 0.75, n))

    is_crack = (labels == _CRACK)[:, None]
    length = np.where(labels == _CRACK, crack_len, scratch_len)[:, None]
    along = (t - 0.5) * length
    offset = np.where(is_crack, jitter * jag[:, None], bend[:, None] * 4 * t * (1 - t))
    main = centre[:, None, :] + along[..., None] * direction + offset[..., None] * perp

    start = main[np.arange(n), branch_at]
    psi = phi + branch_turn
    bdir = np.stack([np.sin(psi), np.cos(psi)], axis=1)[:, None, :]
    bperp = np.stack([np.cos(psi), -np.sin(psi)], axis=1)[:, None, :]
    blen = (branch_frac * crack_len)[:, None]
    boff = branch_jitter * jag[:, None]
    boff[:, 0] = 0.0
    branch = start[:, None, :] + (t * blen)[..., None] * bdir + boff[..., None] * bperp

    vertices = np.stack([main, branch], axis=1)
    mask = np.stack([np.ones(n, dtype=bool), has_branch & (labels == _CRACK)], axis=1)
    return vertices, mask, width


def _render_strokes(vertices: np.ndarray, mask: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Stroke intensity in [0, 1], [m, 32, 32]: a Gaussian profile of the distance to the nearest
    active segment."""
    ys, xs = _grid()
    pix = np.stack([ys.ravel(), xs.ravel()], axis=1).astype(np.float32)  # [P, 2]
    out = np.empty((vertices.shape[0], SIZE * SIZE), dtype=np.float64)
    for lo in range(0, vertices.shape[0], _CHUNK):
        v = vertices[lo : lo + _CHUNK].astype(np.float32)
        a = v[:, :, :-1].reshape(v.shape[0], -1, 2)  # [c, S, 2]
        b = v[:, :, 1:].reshape(v.shape[0], -1, 2)
        active = np.repeat(mask[lo : lo + _CHUNK], SEGMENTS, axis=1)  # [c, S]
        ab = b - a
        ab2 = np.maximum((ab**2).sum(-1), 1e-6)[:, :, None]  # [c, S, 1]
        apy = pix[None, None, :, 0] - a[:, :, None, 0]  # [c, S, P]
        apx = pix[None, None, :, 1] - a[:, :, None, 1]
        proj = np.clip((apy * ab[:, :, None, 0] + apx * ab[:, :, None, 1]) / ab2, 0.0, 1.0)
        dy = apy - proj * ab[:, :, None, 0]
        dx = apx - proj * ab[:, :, None, 1]
        d2 = dy * dy + dx * dx
        d2[~active] = np.inf
        nearest = d2.min(axis=1).astype(np.float64)  # [c, P]
        w = width[lo : lo + _CHUNK, None]
        out[lo : lo + _CHUNK] = np.exp(-nearest / (2 * w * w))
    return out.reshape(-1, SIZE, SIZE)


def _blobs(rng: np.random.Generator, small: np.ndarray) -> np.ndarray:
    """Soft elliptical blobs with an optional second lobe, intensity in [0, 1], [n, 32, 32]."""
    n = small.shape[0]
    ys, xs = _grid()
    centre = rng.uniform(5.0, 27.0, (n, 2))
    radii = np.where(small[:, None], rng.uniform(1.1, 1.7, (n, 2)), rng.uniform(2.0, 5.0, (n, 2)))
    angle = rng.uniform(0.0, np.pi, n)
    power = rng.uniform(2.0, 4.0, n)
    lobe_amp = rng.uniform(0.4, 0.9, n) * (rng.random(n) < 0.5) * ~small
    lobe_dir = rng.uniform(0.0, 2 * np.pi, n)
    lobe_dist = rng.uniform(0.6, 1.2, n) * radii.mean(axis=1)
    lobe_scale = rng.uniform(0.5, 0.8, n)

    def blob(cy: np.ndarray, cx: np.ndarray, ry: np.ndarray, rx: np.ndarray) -> np.ndarray:
        dy, dx = ys - cy[:, None, None], xs - cx[:, None, None]
        ca, sa = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
        u, v = dx * ca + dy * sa, -dx * sa + dy * ca
        q2 = (u / rx[:, None, None]) ** 2 + (v / ry[:, None, None]) ** 2
        return np.exp(-(q2 ** (power[:, None, None] / 2)))

    main = blob(centre[:, 0], centre[:, 1], radii[:, 0], radii[:, 1])
    ly = centre[:, 0] + lobe_dist * np.sin(lobe_dir)
    lx = centre[:, 1] + lobe_dist * np.cos(lobe_dir)
    lobe = blob(ly, lx, radii[:, 0] * lobe_scale, radii[:, 1] * lobe_scale)
    return np.maximum(main, lobe_amp[:, None, None] * lobe)


def generate(seed: int, n: int) -> Dataset:
    """Make ``n`` labelled patches from ``seed``; the same arguments give byte-identical arrays."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.Generator(np.random.PCG64(seed))
    labels = rng.permutation(np.arange(n) % len(LABELS)).astype(np.int64)
    defect = labels != _OK
    hard = defect & (rng.random(n) < HARD_FRACTION)
    low_contrast = hard & (rng.random(n) < 0.5)
    small = hard & ~low_contrast

    background = _background(rng, n)
    contrast = np.where(low_contrast, rng.uniform(*LOW_CONTRAST, n), rng.uniform(*CONTRAST, n))
    sign = np.where(rng.random(n) < DARK_FRACTION, -1.0, 1.0)
    vertices, mask, width = _polylines(rng, labels, small)
    blobs = _blobs(rng, small)

    shape = np.zeros((n, SIZE, SIZE))
    strokes = (labels == _SCRATCH) | (labels == _CRACK)
    if strokes.any():
        shape[strokes] = _render_strokes(vertices[strokes], mask[strokes], width[strokes])
    spots = labels == _SPOT
    shape[spots] = blobs[spots]

    images = background + (sign * contrast)[:, None, None] * shape
    images = np.clip(images, 0.0, 1.0).astype(np.float32)[:, None, :, :]
    return Dataset(images=images, labels=labels, hard=hard)
