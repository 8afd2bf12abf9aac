"""Relative depth: two red dots labelled "Point A" and "Point B" and a question about which is closer."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipelines.checks import MIN_DISTANCE, check_finite

from .base import Control, Example, Input, MissingValues, blank
from .canvas import points_from_layer
from .common import RED, SUFFIX, check_size

NAME = "depth"
LABELS = ("Point A", "Point B")
# {p} and {q} are the two labels; the "contrast" variant swaps them and expects "No".
RELATIONS = {
    "foreground": "Is {p} in the foreground and {q} in the background?",
    "background": "Is {p} in the background and {q} in the foreground?",
    "closer": "Is {p} closer to the camera than {q}?",
    "further": "Is {p} further from the camera than {q}?",
}
TEXT_FILL = (255, 255, 255, 255)
TEXT_OUTLINE = (0, 0, 0, 255)

Box = tuple[int, int, int, int]


def _point(value: object, label: str) -> tuple[float, float]:
    """Validate an (x, y) fraction pair in [0, 1]."""
    try:
        x, y = value  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError(f"{label} {value!r} is not an (x, y) pair") from None
    x, y = check_finite(x, f"{label} x"), check_finite(y, f"{label} y")
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise ValueError(f"{label} ({x:g}, {y:g}) is outside the image: x and y must be in [0, 1]")
    return x, y


@dataclass(frozen=True)
class Spec:
    """Points A and B as (x, y) fractions (0, 0 = top left); relation names the question
    (foreground, background, closer, further); contrast adds the swapped question answered "No"."""

    a: tuple[float, float]
    b: tuple[float, float]
    relation: str = "foreground"
    contrast: bool = False

    def __post_init__(self) -> None:
        a, b = _point(self.a, LABELS[0]), _point(self.b, LABELS[1])
        dist = math.dist(a, b) / math.sqrt(2)
        if dist < MIN_DISTANCE:
            raise ValueError(
                f"{LABELS[0]} {a} and {LABELS[1]} {b} are on top of each other: {dist:.3f} of the diagonal "
                f"apart, need at least {MIN_DISTANCE}"
            )
        relation = str(self.relation).strip().lower()
        if relation not in RELATIONS:
            raise ValueError(f"depth relation {self.relation!r} is not one of {', '.join(RELATIONS)}")
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "relation", relation)


def dot_radius(size: tuple[int, int]) -> int:
    """Dot radius in px: about 8 px at 512 so the VLM sees it, never below 3."""
    return max(3, round(min(check_size(size)) / 64))


def font_size(size: tuple[int, int]) -> int:
    """Label font size: about 23 px at 512, never below 10 (still legible)."""
    return max(10, round(min(check_size(size)) / 22))


def centre_px(point: Sequence[float], size: tuple[int, int]) -> tuple[float, float]:
    """Fractions -> pixel coordinates; 0 and 1 map to the centres of the edge pixels."""
    width, height = check_size(size)
    return point[0] * (width - 1), point[1] * (height - 1)


def _font(size: tuple[int, int]) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=font_size(size))


def _stroke(size: tuple[int, int]) -> int:
    return max(1, font_size(size) // 10)


def _overlaps(p: Box, q: Box) -> bool:
    return p[0] < q[2] and q[0] < p[2] and p[1] < q[3] and q[1] < p[3]


def _inside(box: Box, width: int, height: int) -> bool:
    return box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height


def label_boxes(spec: Spec, size: tuple[int, int]) -> dict[str, Box]:
    """Where each label's text box (x0, y0, x1, y1), end-exclusive, goes.

    Tries right of the dot, then left, above and below, and keeps the first that lies wholly inside
    the image and clear of the other dot and label; this flips labels away from the edges.
    If nothing fits (a tiny image) the right-hand box is shifted inside.
    """
    width, height = check_size(size)
    font, stroke, r = _font(size), _stroke(size), dot_radius(size)
    gap = max(2, r // 2)
    centres = [centre_px(spec.a, size), centre_px(spec.b, size)]
    dots = [(round(x) - r, round(y) - r, round(x) + r + 1, round(y) + r + 1) for x, y in centres]
    placed: dict[str, Box] = {}
    for i, (label, (cx, cy)) in enumerate(zip(LABELS, centres, strict=True)):
        left, top, right, bottom = font.getbbox(label, stroke_width=stroke)
        w, h = math.ceil(right - left), math.ceil(bottom - top)
        x, y = round(cx), round(cy)
        candidates = [
            (x + r + gap, y - h // 2),  # right
            (x - r - gap - w, y - h // 2),  # left
            (x - w // 2, y - r - gap - h),  # above
            (x - w // 2, y + r + gap),  # below
        ]
        boxes = [(bx, by, bx + w, by + h) for bx, by in candidates]
        obstacles = [dots[1 - i], *placed.values()]
        fits = [b for b in boxes if _inside(b, width, height)]
        clear = [b for b in fits if not any(_overlaps(b, o) for o in obstacles)]
        if clear or fits:
            placed[label] = (clear or fits)[0]
        else:
            bx = min(max(boxes[0][0], 0), max(0, width - w))
            by = min(max(boxes[0][1], 0), max(0, height - h))
            placed[label] = (bx, by, bx + w, by + h)
    return placed


def render(spec: Spec, size: tuple[int, int]) -> Image.Image:
    """RGBA layer: white labels with a black outline, then pure red filled dots on top."""
    width, height = check_size(size)
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font, stroke = _font(size), _stroke(size)
    for label, box in label_boxes(spec, size).items():
        left, top, _, _ = font.getbbox(label, stroke_width=stroke)
        draw.text(
            (box[0] - left, box[1] - top),
            label,
            font=font,
            fill=TEXT_FILL,
            stroke_width=stroke,
            stroke_fill=TEXT_OUTLINE,
        )
    arr = np.array(layer)
    r = dot_radius(size)
    rows, cols = np.mgrid[0:height, 0:width]
    for point in (spec.a, spec.b):
        cx, cy = centre_px(point, size)
        # A hard-edged disc: its pixels stay pure red, and its centroid is the requested point.
        arr[(cols - cx) ** 2 + (rows - cy) ** 2 <= r * r] = (*RED, 255)
    return Image.fromarray(arr, "RGBA")


def questions(spec: Spec) -> list[tuple[str, str]]:
    """The paper's depth question for the relation; with contrast, also the swapped one answered "No"."""
    template = RELATIONS[spec.relation]
    pairs = [(f"{template.format(p=LABELS[0], q=LABELS[1])} {SUFFIX}", "Yes")]
    if spec.contrast:
        pairs.append((f"{template.format(p=LABELS[1], q=LABELS[0])} {SUFFIX}", "No"))
    return pairs


def describe(spec: Spec) -> str:
    """One line for file metadata."""
    (ax, ay), (bx, by) = spec.a, spec.b
    return f"depth: A=({ax:.2f}, {ay:.2f}) {spec.relation} vs B=({bx:.2f}, {by:.2f})"


class Depth(Control):
    """The depth control: two dots (left = Point A) or two points, labelled, and a question about which is closer."""

    name = NAME
    question = f"{RELATIONS['foreground'].format(p=LABELS[0], q=LABELS[1])} {SUFFIX}"
    drawn = "two dots (the left one is Point A)"
    inputs = (Input("depth_relation", "dropdown", "Point A (the left dot) is ... relative to Point B",
                    flag="relation", default="foreground", choices=tuple(RELATIONS), sets_questions=True),
              Input("depth_contrast", "checkbox", "Also ask the swapped question (expects No)", flag="contrast",
                    default=False, sets_questions=True),
              # Used when nothing is drawn: how the points are set when depth is combined with a drawn Control.
              Input("point_a", "point", "Point A (x, y as fractions of the image; when not drawn)", flag="a",
                    hint="e.g. 0.3, 0.6"),
              Input("point_b", "point", "Point B (x, y as fractions of the image; when not drawn)", flag="b",
                    hint="e.g. 0.7, 0.4"))
    render, questions, describe = staticmethod(render), staticmethod(questions), staticmethod(describe)

    def spec(self, values: Mapping[str, object], layer: np.ndarray | None, resolution: int) -> Spec:
        if not blank(layer):
            a, b = points_from_layer(layer, 2)
            a, b = (round(a[0], 3), round(a[1], 3)), (round(b[0], 3), round(b[1], 3))
        else:
            a, b = values.get("point_a"), values.get("point_b")
            missing = [k for k, v in (("point_a", a), ("point_b", b)) if v is None]
            if missing:
                raise MissingValues(self.name, missing, f"the canvas is blank: draw {self.drawn} first")
        return Spec(a, b, values.get("depth_relation") or "foreground", bool(values.get("depth_contrast")))

    def default_questions(self, values: Mapping[str, object]) -> list[tuple[str, str]]:
        spec = Spec((0.25, 0.5), (0.75, 0.5), values.get("depth_relation") or "foreground",
                    bool(values.get("depth_contrast")))
        return questions(spec)

    def example(self) -> Example:
        layer = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
        draw, r = ImageDraw.Draw(layer), 10
        for x, y in ((0.25, 0.8), (0.7, 0.45)):
            draw.ellipse([x * 512 - r, y * 512 - r, x * 512 + r, y * 512 + r], fill=(*RED, 255))
        return Example("a green field", 4, values={"depth_relation": "foreground"}, drawing=layer)


CONTROL = Depth()
