"""Turn what a user painted on a gr.ImageEditor into control parameters (pure numpy, no gradio).

Layers are (H, W, 4) uint8 arrays whose alpha > 0 only where painted, as ImageEditor returns them with
image_mode="RGBA", type="numpy". Every function also accepts a PIL image, a list of layers (merged) or
the editor's whole value dict ({"background", "layers", "composite"}; its "layers" are used).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from .common import check_size

Layer = np.ndarray
LayerLike = Any  # ndarray | PIL image | sequence of those | ImageEditor value dict


def _check_layer(layer: object) -> np.ndarray:
    arr = np.asarray(layer.convert("RGBA") if isinstance(layer, Image.Image) else layer)
    if arr.ndim != 3 or arr.shape[2] != 4 or arr.dtype != np.uint8:
        raise ValueError(f"a layer must be (H, W, 4) uint8 RGBA, got shape {arr.shape} dtype {arr.dtype}")
    return arr


def merge_layers(layers: Sequence[Any], size: tuple[int, int] | None = None) -> np.ndarray:
    """Alpha-composite layers in order (later on top) into one (H, W, 4) uint8 layer.

    `None` entries are skipped. With no layers (ImageEditor sends [] when nothing was drawn) this
    returns a blank layer of `size` if given, else raises ValueError("the canvas is blank ...").
    """
    arrays = [_check_layer(x) for x in layers if x is not None]
    if not arrays:
        if size is None:
            raise ValueError("the canvas is blank: nothing has been drawn yet")
        width, height = check_size(size)
        return np.zeros((height, width, 4), dtype=np.uint8)
    shape = arrays[0].shape
    for i, arr in enumerate(arrays[1:], 2):
        if arr.shape != shape:
            raise ValueError(f"layer {i} has shape {arr.shape}, layer 1 has {shape}")
    rgb = np.zeros(shape[:2] + (3,), dtype=np.float32)
    alpha = np.zeros(shape[:2] + (1,), dtype=np.float32)
    for arr in arrays:  # premultiplied "over"
        a = arr[..., 3:4].astype(np.float32) / 255
        rgb = arr[..., :3] * a + rgb * (1 - a)
        alpha = a + alpha * (1 - a)
    out_rgb = np.where(alpha > 0, rgb / np.maximum(alpha, 1e-12), 0)
    out = np.concatenate([out_rgb, alpha * 255], axis=-1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def as_layer(value: LayerLike) -> np.ndarray:
    """One (H, W, 4) uint8 layer from an array, a PIL image, a list of layers or an ImageEditor value."""
    if isinstance(value, dict):
        value = value.get("layers") or []
    if isinstance(value, (list, tuple)):
        return merge_layers(value)
    return _check_layer(value)


def painted(layer: LayerLike) -> np.ndarray:
    """Boolean (H, W) mask of painted pixels."""
    return as_layer(layer)[..., 3] > 0


def is_blank(layer: LayerLike) -> bool:
    """True when nothing is painted (including an empty list of layers)."""
    if isinstance(layer, dict):
        layer = layer.get("layers") or []
    if isinstance(layer, (list, tuple)) and not any(x is not None for x in layer):
        return True
    return not painted(layer).any()


def _require_paint(layer: LayerLike, what: str) -> np.ndarray:
    if is_blank(layer):
        raise ValueError(f"the canvas is blank: draw {what} first")
    return painted(layer)


def _theil_sen(x: np.ndarray, y: np.ndarray, max_points: int = 200) -> tuple[float, float]:
    """Median of pairwise slopes: a starting line that ignores stray blobs."""
    idx = np.linspace(0, len(x) - 1, min(len(x), max_points)).round().astype(int)
    xs, ys = x[idx], y[idx]
    i, j = np.triu_indices(len(xs), k=1)
    dx = xs[j] - xs[i]
    ok = dx != 0
    slope = float(np.median((ys[j] - ys[i])[ok] / dx[ok])) if ok.any() else 0.0
    return slope, float(np.median(y - slope * x))


def _column_medians(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every painted column, the median painted row: one sample per column, so thick or
    scribbled parts of a stroke do not outweigh thin ones."""
    cols, rows = np.nonzero(mask.T)  # sorted by column, then row
    xs, start, count = np.unique(cols, return_index=True, return_counts=True)
    lo = rows[start + (count - 1) // 2]
    hi = rows[start + count // 2]
    return xs.astype(float), (lo + hi) / 2.0


def horizon_from_layer(layer: LayerLike, min_span: float = 0.1) -> tuple[float, float]:
    """Fit a line to a hand-drawn horizon stroke: (height fraction at the horizontal centre, tilt deg).

    Robust to jitter, gaps and stray marks: per-column median rows, a Theil-Sen start, then least squares
    on the inliers (residual within 3 robust sigmas, at least 2 px), repeated until stable.
    Positive tilt = right side higher. The result is ready for horizon.Spec(y, tilt).
    """
    mask = _require_paint(layer, "the horizon as a line across the image")
    height, width = mask.shape
    x, y = _column_medians(mask)
    if len(x) < 2:
        raise ValueError("the horizon stroke is a single column: draw a line across the image")
    slope, icpt = _theil_sen(x, y)
    keep = np.ones(len(x), dtype=bool)
    for _ in range(20):
        res = y - (slope * x + icpt)
        sigma = 1.4826 * float(np.median(np.abs(res[keep])))
        new = np.abs(res) <= max(3 * sigma, 2.0)
        if new.sum() < 2 or np.ptp(x[new]) == 0:
            break
        slope, icpt = np.polyfit(x[new], y[new], 1)
        if np.array_equal(new, keep):
            break
        keep = new
    span = float(np.ptp(x[keep]))
    if span < min_span * width:
        raise ValueError(
            f"the horizon stroke spans only {span:.0f} of {width} px: draw a line across the image"
        )
    tilt = math.degrees(math.atan(-slope))
    if abs(tilt) > 45:
        raise ValueError(f"the drawn horizon is tilted {tilt:.1f} deg; at most 45 deg is supported")
    y_frac = (slope * (width - 1) / 2 + icpt) / height
    if not 0 < y_frac < 1:
        raise ValueError(f"the drawn horizon crosses the centre at height {y_frac:.2f}, outside the image")
    return float(y_frac), float(tilt)


def _label_components(mask: np.ndarray) -> np.ndarray:
    """8-connected component labels by union-find on pixel indices (label = smallest index in the
    component, -1 for unpainted). Hooking roots to the smaller root keeps the forest acyclic."""
    height, width = mask.shape
    flat = mask.ravel()
    idx = np.arange(height * width).reshape(height, width)
    edges = []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = idx[: height - dy, max(0, -dx) : width - max(0, dx)]
        b = idx[dy:, max(0, dx) : width - max(0, -dx)]
        both = flat[a] & flat[b]
        edges.append((a[both], b[both]))
    ea = np.concatenate([e[0] for e in edges])
    eb = np.concatenate([e[1] for e in edges])
    parent = np.arange(height * width)
    while True:
        ra, rb = parent[ea], parent[eb]
        differ = ra != rb
        if not differ.any():
            break
        np.minimum.at(parent, np.maximum(ra, rb)[differ], np.minimum(ra, rb)[differ])
        while True:  # pointer jumping until every node points at its root
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt
    return np.where(flat, parent, -1).reshape(height, width)


def points_from_layer(layer: LayerLike, n: int = 2, min_pixels: int = 4) -> list[tuple[float, float]]:
    """Centres of the n largest painted dots as (x, y) fractions, ordered left to right (ties: top first).

    Dots are 8-connected components of painted pixels; specks under min_pixels are ignored.
    Fractions use the same convention as depth.Spec: 0 and 1 are the centres of the edge pixels.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of points n={n!r} must be a positive int")
    mask = _require_paint(layer, f"{n} point{'s' if n > 1 else ''}")
    height, width = mask.shape
    labels = _label_components(mask)
    rows, cols = np.nonzero(labels >= 0)
    ids, inverse, counts = np.unique(labels[rows, cols], return_inverse=True, return_counts=True)
    big = np.flatnonzero(counts >= min_pixels)
    if len(big) < n:
        raise ValueError(f"found {len(big)} painted dot(s) but {n} are needed: paint {n} separate dots")
    chosen = big[np.argsort(-counts[big], kind="stable")[:n]]
    cx = np.bincount(inverse, weights=cols, minlength=len(ids))[chosen] / counts[chosen]
    cy = np.bincount(inverse, weights=rows, minlength=len(ids))[chosen] / counts[chosen]
    points = [
        (float(x) / max(width - 1, 1), float(y) / max(height - 1, 1)) for x, y in zip(cx, cy, strict=True)
    ]
    return sorted(points)


def point_from_click(xy: Sequence[float], size: tuple[int, int]) -> tuple[float, float]:
    """Pixel coordinates of a click (gr.SelectData.index, [x, y]) -> (x, y) fractions of the image."""
    width, height = check_size(size)
    try:
        x, y = (float(v) for v in xy)
    except (TypeError, ValueError):
        raise ValueError(f"click position {xy!r} is not an (x, y) pair") from None
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"click position {tuple(xy)} is outside the {width}x{height} image")
    return min(x / max(width - 1, 1), 1.0), min(y / max(height - 1, 1), 1.0)


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """Lengths of the vertical runs of True in every column."""
    d = np.diff(np.pad(mask, ((1, 1), (0, 0))).astype(np.int8), axis=0)
    _, starts = np.nonzero((d == 1).T)
    _, ends = np.nonzero((d == -1).T)
    return ends - starts


def stroke_thickness(layer: LayerLike) -> int:
    """Thickness in px of a painted stroke: median run length across the stroke's main direction.

    The main direction comes from the principal axis of the painted pixels; runs are counted along
    columns for a mostly horizontal stroke (rows otherwise) and scaled by the cosine of the slant.
    """
    mask = _require_paint(layer, "a stroke")
    rows, cols = np.nonzero(mask)
    if len(rows) < 2:
        return 1
    cov = np.cov(np.stack([cols, rows]).astype(float))
    _, vecs = np.linalg.eigh(cov)
    vx, vy = np.abs(vecs[:, -1])  # unit principal axis
    if vx >= vy:
        runs, factor = _run_lengths(mask), vx
    else:
        runs, factor = _run_lengths(mask.T), vy
    return max(1, round(float(np.median(runs)) * factor))
