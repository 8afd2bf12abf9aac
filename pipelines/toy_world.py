"""A toy world where the method can be seen to work offline: landscapes with an analytic ground truth.

Scenes are a sky above a horizon line and ground below it, coloured by the prompt's scheme. Because the
scenes are drawn here, their horizon and colours are known exactly, and `horizon_of` / `scheme_of` /
`palette_distance` measure them back from pixels alone (for generated images, which have no ground truth).

    python -m pipelines.toy_world train --out assets/toy-world --seed 0

trains, with the architectures our loader and adapters use, a tiny Flux-shaped one-step generator of
such scenes and a tiny Qwen2.5-VL-shaped judge answering the horizon, palette and alignment questions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from overlays.colors import RGB, ciede2000, ciede2000_lab, srgb_to_lab
from overlays.palette import extract_palette

SIZE = 112  # Flux VAE /8 -> 14x14 latents (49 packed tokens); a multiple of 28, so Qwen needs no resize
H_RANGE = (0.15, 0.85)
MAX_TILT = 4.0
HORIZON_TOLERANCE = 0.06  # the judge says Yes iff the red line is within this fraction of the height
PALETTE_THRESHOLD = 10.0  # mean CIEDE2000 below which an image "matches" a palette (see palette_distance)


@dataclass(frozen=True)
class ColorScheme:
    """Colours of one prompt's world: sky gradient top -> horizon, ground gradient horizon -> bottom."""

    sky_top: RGB
    sky_bottom: RGB
    ground_top: RGB
    ground_bottom: RGB
    texture: float  # 0..1: amplitude of the ground's streaky noise (the sky gets a fifth of it)
    sun: RGB | None = None  # a sun (or moon) can appear in this world


PROMPTS: dict[str, ColorScheme] = {
    "a beach at noon": ColorScheme((40, 110, 220), (150, 200, 245), (238, 218, 165), (205, 175, 115), 0.3,
                                   (255, 250, 215)),
    "a desert at sunset": ColorScheme((80, 35, 105), (250, 140, 60), (180, 95, 45), (120, 60, 32), 0.4,
                                      (255, 205, 90)),
    "a green field": ColorScheme((65, 135, 225), (195, 222, 245), (95, 170, 60), (35, 100, 25), 0.5),
    "a snowy plain": ColorScheme((135, 145, 170), (205, 210, 222), (250, 250, 252), (200, 212, 232), 0.15),
    "a lake at night": ColorScheme((5, 8, 30), (60, 70, 125), (15, 28, 55), (5, 12, 28), 0.2, (235, 235, 205)),
    "a lavender field": ColorScheme((110, 165, 230), (245, 205, 195), (160, 115, 205), (85, 50, 135), 0.5),
}

TRUNK, CROWN = (85, 58, 35), (30, 78, 38)


@dataclass(frozen=True)
class Scene:
    """One landscape. h: horizon height as a fraction of the image height from the top, at the horizontal
    centre (the convention of overlays.horizon); tilt in degrees, positive = right side higher.
    sun: (x, y, radius) as fractions of the size; tree: (x, crown height above the horizon) as fractions."""

    prompt: str
    h: float
    tilt: float = 0.0
    seed: int = 0
    sun: tuple[float, float, float] | None = None
    tree: tuple[float, float] | None = None


def sample_scene(rng: np.random.Generator, prompt: str | None = None) -> Scene:
    """A random scene of `prompt` (a random prompt when None), the sun and a tree sometimes present."""
    prompt = prompt if prompt is not None else list(PROMPTS)[rng.integers(len(PROMPTS))]
    if prompt not in PROMPTS:
        raise ValueError(f"unknown toy-world prompt {prompt!r}; available: {', '.join(PROMPTS)}")
    h = float(rng.uniform(*H_RANGE))
    tilt = float(rng.uniform(-MAX_TILT, MAX_TILT))
    sun = None
    if PROMPTS[prompt].sun is not None and rng.random() < 0.5 and h > 0.3:
        r = float(rng.uniform(0.04, 0.08))
        # Wholly in the sky with a margin, so the sun never touches the horizon.
        sun = (float(rng.uniform(0.15, 0.85)), float(rng.uniform(r + 0.02, h - r - 0.08)), r)
    tree = None
    if rng.random() < 0.3:
        tree = (float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.08, min(0.3, h - 0.05))))
    return Scene(prompt, h, tilt, int(rng.integers(2**31)), sun, tree)


def _horizon_rows(h: float, tilt: float, size: int) -> np.ndarray:
    """Continuous row of the horizon at each column's centre (rows grow downwards)."""
    cols = np.arange(size) + 0.5
    return h * size - math.tan(math.radians(tilt)) * (cols - size / 2)


def _noise(rng: np.random.Generator, size: int, cells: tuple[int, int]) -> np.ndarray:
    """Smooth noise in about [-1, 1]: a coarse random grid upsampled bilinearly."""
    grid = rng.standard_normal(cells).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((size, size), Image.BILINEAR)
    return np.clip(np.asarray(img) / 1.5, -1, 1)


def render_colors(scheme: ColorScheme, h: float, tilt: float, size: int = SIZE, seed: int | None = None,
                  sun: tuple[float, float, float] | None = None,
                  tree: tuple[float, float] | None = None) -> np.ndarray:
    """(size, size, 3) float RGB in 0..255 of a scene; seed None draws no texture (the scheme's clean image)."""
    rows = np.arange(size, dtype=np.float64)[:, None] + 0.5
    horizon = _horizon_rows(h, tilt, size)[None, :]
    sky_t = np.clip(rows / np.maximum(horizon, 1), 0, 1)[..., None]
    ground_t = np.clip((rows - horizon) / np.maximum(size - horizon, 1), 0, 1)[..., None]
    sky = np.array(scheme.sky_top) * (1 - sky_t) + np.array(scheme.sky_bottom) * sky_t
    ground = np.array(scheme.ground_top) * (1 - ground_t) + np.array(scheme.ground_bottom) * ground_t
    if seed is not None:
        rng = np.random.default_rng(seed)
        # Ground: streaks stretched horizontally (furrows, ripples); sky: faint large clouds.
        streaks = 0.6 * _noise(rng, size, (28, 6)) + 0.4 * _noise(rng, size, (56, 14))
        ground = ground * (1 + 0.22 * scheme.texture * streaks[..., None])
        sky = sky + 40 * scheme.texture * 0.2 * _noise(rng, size, (4, 4))[..., None]
    # Antialiased edge: each pixel's share of sky is the part of its row span above the line.
    sky_share = np.clip(horizon - (rows - 0.5), 0, 1)[..., None]
    img = sky * sky_share + ground * (1 - sky_share)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    if sun is not None and scheme.sun is not None:
        sx, sy, sr = (v * size for v in sun)
        cover = np.clip(sr - np.hypot(xx - sx, yy - sy) + 0.5, 0, 1)[..., None]
        img = img * (1 - cover) + np.array(scheme.sun) * cover
    if tree is not None:
        tx, crown = tree[0] * size, tree[1] * size
        base = float(np.interp(tx, np.arange(size) + 0.5, horizon[0]))
        top = base - crown
        trunk = (np.abs(xx - tx) < 1.6) & (yy > top) & (yy < base + 0.06 * size)
        img[trunk] = TRUNK
        radius = max(3.0, 0.45 * crown)
        cover = np.clip(radius - np.hypot(xx - tx, yy - top) + 0.5, 0, 1)[..., None]
        img = img * (1 - cover) + np.array(CROWN) * cover
    return np.clip(img, 0, 255)


def render_scene(scene: Scene, size: int = SIZE) -> Image.Image:
    """The scene as an RGB image."""
    scheme = PROMPTS[scene.prompt]
    arr = render_colors(scheme, scene.h, scene.tilt, size, scene.seed, scene.sun, scene.tree)
    return Image.fromarray(np.rint(arr).astype(np.uint8), "RGB")


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """An RGB image as (H, W, 3) float in 0..255 (arrays in [0, 1] are scaled up)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64)
    arr = np.asarray(image, dtype=np.float64)
    return arr * 255 if arr.max() <= 1.0 else arr


def _fit_line(x: np.ndarray, y: np.ndarray, tol: float) -> tuple[float, float]:
    """Robust y = a + b x: Theil-Sen (resists up to ~29% outliers), then least squares on its inliers."""
    i, j = np.triu_indices(len(x), 1)
    slope = float(np.median((y[j] - y[i]) / (x[j] - x[i])))
    icept = float(np.median(y - slope * x))
    inliers = np.abs(y - icept - slope * x) < tol
    if inliers.sum() >= 2:
        slope, icept = np.polyfit(x[inliers], y[inliers], 1)
    return float(icept), float(slope)


def horizon_boundaries(image: Image.Image | np.ndarray, window: int = 2) -> np.ndarray:
    """Per column, the (sub-pixel) row where the colour changes most between the rows above and below."""
    arr = _as_array(image)
    height = arr.shape[0]
    # Two rows on each side average the texture out yet keep a smooth sky gradient (a ramp) below a step
    # edge; 3 columns are pooled for the same reason.
    padded = np.pad(arr, ((0, 0), (1, 1), (0, 0)), mode="edge")
    arr = (padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]) / 3
    csum = np.concatenate([np.zeros((1, *arr.shape[1:])), np.cumsum(arr, 0)])
    b = np.arange(window, height - window + 1)  # boundary between rows b-1 and b
    above = (csum[b] - csum[b - window]) / window
    below = (csum[b + window] - csum[b]) / window
    score = np.linalg.norm(below - above, axis=-1)  # (len(b), W)
    k = score.argmax(0)
    cols = np.arange(score.shape[1])
    # Parabolic refinement around the peak for a sub-pixel boundary.
    k0, k2 = np.clip(k - 1, 0, len(b) - 1), np.clip(k + 1, 0, len(b) - 1)
    s0, s1, s2 = score[k0, cols], score[k, cols], score[k2, cols]
    denom = s0 - 2 * s1 + s2
    offset = np.where((denom < 0) & (k0 != k) & (k2 != k), 0.5 * (s0 - s2) / np.where(denom == 0, 1, denom), 0)
    return b[k] + np.clip(offset, -0.5, 0.5)


def horizon_of(image: Image.Image | np.ndarray) -> tuple[float, float]:
    """(horizon height at the horizontal centre as a fraction of the height, tilt in degrees), from pixels.

    Per column the strongest vertical colour edge, then a robust line fit: suns, trees and texture
    edges in a minority of columns do not move it.
    """
    arr = _as_array(image)
    height, width = arr.shape[:2]
    rows = horizon_boundaries(arr)
    x = np.arange(width) + 0.5
    icept, slope = _fit_line(x, rows, tol=2.0)
    return (icept + slope * width / 2) / height, math.degrees(math.atan(-slope))


def dominant_colors(image: Image.Image | np.ndarray, k: int = 5) -> list[RGB]:
    """The image's k dominant colours (k-means in CIELAB, biggest cluster first)."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.rint(np.clip(_as_array(image), 0, 255)).astype(np.uint8), "RGB")
    return extract_palette(image, k)


def _pool(arr: np.ndarray, factor: int = 4) -> np.ndarray:
    h, w = arr.shape[0] // factor, arr.shape[1] // factor
    return arr[:h * factor, :w * factor].reshape(h, factor, w, factor, 3).mean((1, 3))


def scheme_distances(image: Image.Image | np.ndarray) -> dict[str, float]:
    """Per prompt: median CIEDE2000 between the image and that prompt's clean scene at the image's horizon."""
    arr = _as_array(image)
    size = arr.shape[0]
    h, tilt = horizon_of(arr)
    h = float(np.clip(h, 0.02, 0.98))
    lab = srgb_to_lab(_pool(arr))
    out = {}
    for prompt, scheme in PROMPTS.items():
        ref = srgb_to_lab(_pool(render_colors(scheme, h, tilt, size)))
        # The median ignores a sun, a tree and the pixels next to a slightly misplaced horizon.
        out[prompt] = float(np.median(ciede2000_lab(lab, ref)))
    return out


def scheme_of(image: Image.Image | np.ndarray) -> tuple[str, float]:
    """The prompt whose colour scheme is closest to the image's colours, and that distance (CIEDE2000)."""
    dist = scheme_distances(image)
    best = min(dist, key=dist.get)
    return best, dist[best]


def palette_distance(image: Image.Image | np.ndarray, colors: list[RGB] | tuple[RGB, ...]) -> float:
    """Mean CIEDE2000 from each of the image's 5 dominant colours to its nearest palette colour.

    0 when every dominant colour is in the palette. The toy judge is taught that an image "matches" a palette
    below PALETTE_THRESHOLD = 10: measured on 120 random scenes, a palette sampled from the scene's own scheme
    (`scheme_palette`) has a median of 4.5 (90% under 13, a sun or tree adds an unmatched colour); another
    prompt's scheme is 8-45 away (closest pairs: snowy plain vs lavender field, beach vs green field).
    """
    if not colors:
        raise ValueError("the palette is empty")
    dom = srgb_to_lab(np.array(dominant_colors(image), dtype=np.float64))
    pal = srgb_to_lab(np.array(colors, dtype=np.float64))
    return float(ciede2000_lab(dom[:, None], pal[None]).min(1).mean())


def scheme_palette(prompt: str, n: int = 6) -> list[RGB]:
    """n colours along the prompt's sky and ground gradients (half each): a palette its scenes match."""
    s = PROMPTS[prompt]
    out = []
    for (a, b), m in (((s.sky_top, s.sky_bottom), n // 2), ((s.ground_top, s.ground_bottom), n - n // 2)):
        for f in np.linspace(0, 1, m) if m > 1 else [0.5]:
            out.append(tuple(int(round(x + (y - x) * f)) for x, y in zip(a, b, strict=True)))
    return out


__all__ = [
    "ColorScheme", "H_RANGE", "HORIZON_TOLERANCE", "PALETTE_THRESHOLD", "PROMPTS", "SIZE", "Scene",
    "ciede2000", "dominant_colors", "horizon_of", "palette_distance", "render_scene", "sample_scene",
    "scheme_of", "scheme_palette",
]
