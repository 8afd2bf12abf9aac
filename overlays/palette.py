"""Colour palette: a strip of equal-width swatches along the bottom of the image."""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.checks import MAX_SWATCHES, MIN_SWATCHES

from .base import Control, Example, Input, MissingValues
from .colors import RGB, as_rgb, lab_to_srgb, parse_colors, srgb_to_lab, to_hex
from .common import SUFFIX, check_size

NAME = "palette"
PRESETS_PATH = Path(__file__).resolve().parent.parent / "assets" / "palettes.json"
QUESTION = f"Do the colors of the image match the color palette shown at the bottom? {SUFFIX}"


@dataclass(frozen=True)
class Spec:
    """Swatch colours (tuples or colour strings, normalised to (r, g, b)) and strip height as a fraction."""

    colors: tuple[RGB, ...]
    strip_height: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.colors, str):  # one string would iterate as characters
            # ValueError, not TypeError: every bad user input raises ValueError (see common.py)
            raise ValueError(f"palette colours {self.colors!r} must be a list of colours, not one string")  # noqa: TRY004
        colors = tuple(as_rgb(c) for c in self.colors)
        if not MIN_SWATCHES <= len(colors) <= MAX_SWATCHES:
            raise ValueError(f"palette has {len(colors)} swatches; it needs {MIN_SWATCHES} to {MAX_SWATCHES}")
        h = self.strip_height
        if isinstance(h, bool) or not isinstance(h, numbers.Real) or not 0 < h <= 0.5:
            raise ValueError(f"palette strip height {h!r} is outside (0, 0.5]")
        object.__setattr__(self, "colors", colors)
        object.__setattr__(self, "strip_height", float(h))

    @classmethod
    def from_preset(cls, name: str, strip_height: float = 0.1) -> Spec:
        """Spec from a named preset in assets/palettes.json (case and outer spaces ignored)."""
        presets = load_presets()
        key = " ".join(str(name).split()).lower()
        if key not in presets:
            raise ValueError(f"unknown palette preset {name!r}; available: {', '.join(sorted(presets))}")
        return cls(tuple(presets[key]), strip_height)


def load_presets(path: Path = PRESETS_PATH) -> dict[str, list[str]]:
    """Named palettes: {name: ["#rrggbb", ...]}."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return {str(k).lower(): [str(c) for c in v] for k, v in data.items()}


def strip_rows(spec: Spec, height: int) -> int:
    """Strip height in pixels: at least one row so a tiny image still shows the palette."""
    return max(1, round(spec.strip_height * height))


def swatch_bounds(n: int, width: int) -> list[tuple[int, int]]:
    """[x0, x1) of n swatches of width // n; the last absorbs the remainder so they tile the width exactly."""
    if width < n:
        raise ValueError(f"image width {width} px is too small for {n} swatches")
    step = width // n
    return [(i * step, width if i == n - 1 else (i + 1) * step) for i in range(n)]


def render(spec: Spec, size: tuple[int, int]) -> Image.Image:
    """RGBA layer with the opaque swatch strip at the bottom, transparent elsewhere."""
    width, height = check_size(size)
    layer = np.zeros((height, width, 4), dtype=np.uint8)
    top = height - strip_rows(spec, height)
    for (x0, x1), rgb in zip(swatch_bounds(len(spec.colors), width), spec.colors, strict=True):
        layer[top:, x0:x1] = (*rgb, 255)
    return Image.fromarray(layer, "RGBA")


def questions(spec: Spec) -> list[tuple[str, str]]:
    """The paper's palette question."""
    return [(QUESTION, "Yes")]


def describe(spec: Spec) -> str:
    """One line for file metadata."""
    return f"palette {' '.join(to_hex(c) for c in spec.colors)}, strip {spec.strip_height:.0%}"


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: spread initial centres so small but distinct colours get a centre."""
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        i = rng.integers(len(x)) if total <= 0 else rng.choice(len(x), p=d2 / total)
        centres.append(x[i])
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(1))
    return np.array(centres)


def _kmeans(
    x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd iterations; returns (centres, labels)."""
    centres = _kmeans_pp(x, k, rng)
    labels = np.full(len(x), -1)
    for _ in range(iters):
        d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
        new = d2.argmin(1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            members = x[labels == j]
            if len(members):  # an empty cluster keeps its centre rather than becoming NaN
                centres[j] = members.mean(0)
    return centres, labels


def extract_palette(image: Image.Image, k: int = 5, seed: int = 0, max_side: int = 128) -> list[RGB]:
    """Dominant colours of an image by k-means in CIELAB, biggest cluster first.

    Deterministic (fixed seed, best of a few restarts). Big images are subsampled with nearest
    neighbour so that no blended colours appear at block edges. Fully transparent pixels are ignored.
    Returns fewer than k colours when the image has fewer distinct colours.
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= 16:
        raise ValueError(f"palette size k={k!r} is outside 1..16")
    img = image.convert("RGBA")
    scale = max_side / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.NEAREST)
    arr = np.asarray(img).reshape(-1, 4)
    rgb = arr[arr[:, 3] > 0, :3]
    if len(rgb) == 0:
        raise ValueError("the image is fully transparent: no colours to extract")
    distinct = np.unique(rgb, axis=0)
    k = min(int(k), len(distinct))
    lab = srgb_to_lab(rgb)
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(4):  # restarts guard against an unlucky seeding
        centres, labels = _kmeans(lab, k, rng)
        inertia = ((lab - centres[labels]) ** 2).sum()
        if best is None or inertia < best[0]:
            best = (inertia, centres, labels)
    _, centres, labels = best
    counts = np.bincount(labels, minlength=k)
    order = np.argsort(-counts, kind="stable")
    out = np.rint(lab_to_srgb(centres[order])).astype(int)
    return [(int(r), int(g), int(b)) for (r, g, b), n in zip(out, counts[order], strict=True) if n > 0]


class Palette(Control):
    """The palette control: swatches from colours, a preset or a picture; a strip at the bottom."""

    name, question = NAME, QUESTION
    changes = "colours"
    # The app's palette editor offers the presets and a picture's colours as buttons that fill the swatches box;
    # the CLI takes them as inputs of their own.
    inputs = (Input("palette_colors", "colors", f"Swatches ({MIN_SWATCHES} to {MAX_SWATCHES} colours)",
                    flag="colors", hint="separated by spaces, commas or ';', e.g. '#2b1d0e #8c6d46 rgb(200, 180, 150)'",
                    default=" ".join(load_presets()["retro"])),
              Input("palette", "dropdown", "A preset palette", flag="palette", app=False,
                    choices=tuple(load_presets())),
              Input("palette_image", "image", "Take the dominant colours of this picture", flag="palette-image",
                    app=False),
              Input("swatches", "slider", "How many colours the picture gives", flag="swatches", app=False, default=5,
                    minimum=MIN_SWATCHES, maximum=MAX_SWATCHES),
              Input("strip", "slider", "Strip height (a fraction of the image)", flag="strip", app=False, default=0.1,
                    minimum=0, maximum=0.5))
    render, questions, describe = staticmethod(render), staticmethod(questions), staticmethod(describe)

    def bottom_rows(self, spec: Spec, size: tuple[int, int]) -> int:
        return strip_rows(spec, size[1])

    def spec(self, values: Mapping[str, object], layer: np.ndarray | None, resolution: int) -> Spec:
        strip = 0.1 if values.get("strip") is None else values["strip"]
        picture = values.get("palette_image")
        if picture is not None:
            n = 5 if values.get("swatches") is None else values["swatches"]
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not MIN_SWATCHES <= n <= MAX_SWATCHES:
                raise ValueError(f"swatches {n!r} must be a whole number from {MIN_SWATCHES} to {MAX_SWATCHES}")
            return Spec(tuple(extract_palette(picture, int(n))), strip_height=strip)
        text = values.get("palette_colors")
        if isinstance(text, str) and text.strip():
            return Spec(tuple(parse_colors(text)), strip_height=strip)
        if values.get("palette"):
            return Spec.from_preset(str(values["palette"]), strip_height=strip)
        raise MissingValues(self.name, ["palette", "palette_colors", "palette_image"],
                            "the palette is empty: give colours like #e63946 or rgb(230, 57, 70)")

    def example(self) -> Example:
        return Example("a green field", 1, values={"palette_colors": " ".join(load_presets()["autumn"])})


CONTROL = Palette()
