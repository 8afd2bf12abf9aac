"""Horizon: a red line at a given height (optionally tilted) that the scene's horizon should follow."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipelines.checks import MAX_TILT, check_finite

from .base import Control, Example, Input, MissingValues, blank
from .canvas import horizon_from_layer
from .common import RED, SUFFIX, check_size

NAME = "horizon"
QUESTION = f"Is the horizon of the scene aligned with the red line? {SUFFIX}"


@dataclass(frozen=True)
class Spec:
    """Height y as a fraction of the image height (0 top, 1 bottom), measured at the horizontal centre;
    tilt in degrees (positive = right side higher); thickness in px (None: max(2, round(H / 128)))."""

    y: float
    tilt: float = 0.0
    thickness: int | None = None

    def __post_init__(self) -> None:
        y = check_finite(self.y, "horizon height")
        if not 0 < y < 1:
            raise ValueError(f"horizon height {self.y!r} is outside (0, 1)")
        tilt = check_finite(self.tilt, "horizon tilt")
        if abs(tilt) > MAX_TILT:
            raise ValueError(f"horizon tilt {self.tilt!r} deg is outside [-{MAX_TILT:g}, {MAX_TILT:g}]")
        t = self.thickness
        if t is not None and (isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 1):
            raise ValueError(f"horizon thickness {t!r} must be a positive int (pixels)")
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "tilt", tilt)


def thickness_px(spec: Spec, height: int) -> int:
    """Line thickness: thick enough for the VLM to see at any size, about 4 px at 512."""
    return spec.thickness if spec.thickness is not None else max(2, round(height / 128))


def line_mask(spec: Spec, size: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) mask of the line.

    The line passes through (column (W-1)/2, row round(y*H)) and is rotated about that point, so y is
    the height at the image's horizontal centre whatever the tilt (the same convention as
    canvas.horizon_from_layer). With tilt 0 it covers rows round(y*H) - t//2 ... + t - 1 exactly.
    """
    width, height = check_size(size)
    t = thickness_px(spec, height)
    centre_row = round(spec.y * height)
    a = math.radians(spec.tilt)
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    # Signed perpendicular distance to the line; image rows grow downwards, hence + tan for "right higher".
    d = (rows - centre_row + math.tan(a) * (cols - (width - 1) / 2)) * math.cos(a)
    return (d >= -(t // 2) - 0.5) & (d < t - t // 2 - 0.5)


def render(spec: Spec, size: tuple[int, int]) -> Image.Image:
    """RGBA layer with the opaque red line, transparent elsewhere."""
    mask = line_mask(spec, size)
    layer = np.zeros((*mask.shape, 4), dtype=np.uint8)
    layer[mask] = (*RED, 255)
    return Image.fromarray(layer, "RGBA")


def questions(spec: Spec) -> list[tuple[str, str]]:
    """The paper's horizon question."""
    return [(QUESTION, "Yes")]


def describe(spec: Spec) -> str:
    """One line for file metadata."""
    return f"horizon at y={spec.y:.2f}, tilt {spec.tilt:.1f} deg"


class Horizon(Control):
    """The horizon control: read from a drawn line (or --y/--tilt), a red line, the paper's question."""

    name, question = NAME, QUESTION
    drawn = "the horizon as a line across the image"
    # Used when nothing is drawn: how a horizon is set when it is combined with a drawn Control.
    inputs = (Input("horizon_y", "number", "Horizon height (a fraction from the top; when not drawn)", flag="y",
                    minimum=0, maximum=1),
              Input("horizon_tilt", "number", "Horizon tilt (degrees, right side up; when not drawn)", flag="tilt",
                    default=0.0, minimum=-MAX_TILT, maximum=MAX_TILT))
    render, questions, describe = staticmethod(render), staticmethod(questions), staticmethod(describe)

    def spec(self, values: Mapping[str, object], layer: np.ndarray | None, resolution: int) -> Spec:
        if not blank(layer):
            y, tilt = horizon_from_layer(layer)
            return Spec(round(y, 3), round(tilt, 1))
        if values.get("horizon_y") is None:
            raise MissingValues(self.name, ["horizon_y"], f"the canvas is blank: draw {self.drawn}, or type its height")
        return Spec(values["horizon_y"], values.get("horizon_tilt") or 0.0)

    def example(self) -> Example:
        return Example("a beach at noon", 2, drawing=render(Spec(0.35, 4.0, thickness=8), (512, 512)))


CONTROL = Horizon()
