"""Line weight: a red horizontal stroke of a given thickness near the bottom of the image."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ._common import RED, SUFFIX, check_size

NAME = "line-weight"
SPAN = (0.2, 0.8)  # the stroke covers the middle 60 % of the width
BOTTOM_MARGIN = 0.05  # gap between the stroke and the bottom edge, as a fraction of the height
QUESTION = f"Is the red line at the bottom representative of the line weight of the image? {SUFFIX}"


@dataclass(frozen=True)
class Spec:
    """Stroke thickness in pixels of the final image (checked against the width in render)."""

    px: int

    def __post_init__(self) -> None:
        px = self.px
        if isinstance(px, bool) or not isinstance(px, numbers.Integral) or px < 1:
            raise ValueError(f"line weight {px!r} px must be a positive int")


def max_px(width: int) -> float:
    """Thickest allowed stroke: beyond width/10 it reads as a bar, not a line."""
    return width / 10


def stroke_box(spec: Spec, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), end-exclusive, of the stroke; ValueError if it does not fit the image."""
    width, height = check_size(size)
    if spec.px > max_px(width):
        raise ValueError(
            f"line weight {spec.px} px exceeds the limit {max_px(width):g} px (width/10) "
            f"for a {width} px wide image"
        )
    y1 = height - max(1, round(BOTTOM_MARGIN * height))
    y0 = y1 - spec.px
    if y0 < 0:
        raise ValueError(f"line weight {spec.px} px does not fit in an image {height} px high")
    return round(SPAN[0] * width), y0, round(SPAN[1] * width), y1


def render(spec: Spec, size: tuple[int, int]) -> Image.Image:
    """RGBA layer with the opaque red stroke, transparent elsewhere."""
    width, height = check_size(size)
    x0, y0, x1, y1 = stroke_box(spec, size)
    layer = np.zeros((height, width, 4), dtype=np.uint8)
    layer[y0:y1, x0:x1] = (*RED, 255)
    return Image.fromarray(layer, "RGBA")


def questions(spec: Spec) -> list[tuple[str, str]]:
    """The paper's line-weight question."""
    return [(QUESTION, "Yes")]


def describe(spec: Spec) -> str:
    """One line for file metadata."""
    return f"line weight {spec.px} px"
