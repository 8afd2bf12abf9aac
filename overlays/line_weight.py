"""Line weight: a red horizontal stroke of a given thickness near the bottom of the image."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .base import Control, Example, Input, MissingValues, blank
from .canvas import stroke_thickness
from .common import RED, SUFFIX, check_size

NAME = "line-weight"
SPAN = (0.2, 0.8)  # the stroke covers the middle 60 % of the width
BOTTOM_MARGIN = 0.05  # gap between the stroke and the bottom edge, as a fraction of the height
QUESTION = f"Is the red line at the bottom representative of the line weight of the image? {SUFFIX}"


@dataclass(frozen=True)
class Spec:
    """Stroke thickness in pixels of the final image (checked against the width in render); `lift` raises it
    that many pixels above its place (to sit above a palette strip in a combined overlay)."""

    px: int
    lift: int = 0

    def __post_init__(self) -> None:
        px = self.px
        if isinstance(px, bool) or not isinstance(px, numbers.Integral) or px < 1:
            raise ValueError(f"line weight {px!r} px must be a positive int")
        if isinstance(self.lift, bool) or not isinstance(self.lift, numbers.Integral) or self.lift < 0:
            raise ValueError(f"line lift {self.lift!r} px must be a non-negative int")


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
    y1 = height - max(1, round(BOTTOM_MARGIN * height)) - spec.lift
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
    return f"line weight {spec.px} px" + (f", {spec.lift} px higher" if spec.lift else "")


def max_line_px(resolution: int) -> int:
    """The thickest stroke allowed at this resolution, in whole pixels."""
    return max(1, int(max_px(resolution)))


def measured_px(layer: np.ndarray, resolution: int) -> int:
    """A drawn stroke's thickness, scaled from the canvas to the generator's resolution and clamped."""
    px = stroke_thickness(layer) * resolution / layer.shape[1]
    return int(min(max(1, round(px)), max_line_px(resolution)))


class LineWeight(Control):
    """The line-weight control: a drawn stroke's thickness (or a number) as a red stroke at the bottom."""

    name, question = NAME, QUESTION
    drawn = "a stroke as thick as the lines you want"
    inputs = (Input("line_px", "slider", "Line weight (px at the generator's resolution)", flag="px", default=4,
                    minimum=1, maximum=max_line_px),)
    render, questions, describe = staticmethod(render), staticmethod(questions), staticmethod(describe)

    def bottom_rows(self, spec: Spec, size: tuple[int, int]) -> int:
        return size[1] - stroke_box(spec, size)[1]  # from the stroke's top row to the bottom edge

    def lifted(self, spec: Spec, rows: int) -> Spec:
        return dataclasses.replace(spec, lift=spec.lift + rows)

    def spec(self, values: Mapping[str, object], layer: np.ndarray | None, resolution: int) -> Spec:
        if not blank(layer):  # a drawn stroke wins over the number
            return Spec(measured_px(np.asarray(layer), resolution))
        px = values.get("line_px")
        if px is None:
            raise MissingValues(self.name, ["line_px"], f"the canvas is blank: draw {self.drawn} first")
        top = max_line_px(resolution)
        if isinstance(px, bool) or not isinstance(px, numbers.Real) or px != int(px) or not 1 <= px <= top:
            raise ValueError(f"line weight (px) {px!r} must be a whole number from 1 to {top}")
        return Spec(int(px))

    def spec_notes(self, values: Mapping[str, object], layer: np.ndarray | None, resolution: int) -> list[str]:
        if blank(layer):
            return []
        return [f"line weight measured from your stroke: {measured_px(np.asarray(layer), resolution)} px at "
                f"{resolution} px"]

    def example(self) -> Example:
        return Example("a snowy plain", 3, values={"line_px": 6})


CONTROL = LineWeight()
