"""Composition: a user's reference (e.g. an abstract painting annotated in red) blended over the image."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .base import Control, Example, Input, MissingValues, blank
from .canvas import merge_layers
from .common import check_size, with_suffix

NAME = "composition"
MODES = ("transparent", "solid")
WHITE_LEVEL = 240  # all channels >= this count as paper white in "solid" mode
TRANSPARENT_ALPHA = 128  # 50 % of 255, as in the paper's blended reference
DEFAULT_QUESTION = "Does the image follow the layout sketched in red?"


def _load(reference: Image.Image | str | os.PathLike[str]) -> Image.Image:
    """The reference as an RGBA image; ValueError naming the path if it cannot be read."""
    if isinstance(reference, Image.Image):
        return reference.convert("RGBA")
    if not isinstance(reference, (str, os.PathLike)):
        # ValueError, not TypeError: every bad user input raises ValueError (see common.py)
        raise ValueError(f"composition reference {reference!r} is neither an image nor a path")  # noqa: TRY004
    try:
        with Image.open(reference) as img:
            return img.convert("RGBA")  # convert() loads the pixels, so the file can be closed
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read composition reference {os.fspath(reference)!r}: {err}") from None


@dataclass(frozen=True)
class Spec:
    """Reference image (PIL image or path, loaded as RGBA), free-text yes/no questions, blend mode.

    Questions not ending in "Answer with Yes or No." get it appended; the expected answer is "Yes".
    """

    reference: Image.Image
    questions: tuple[str, ...]
    mode: str = "transparent"

    def __post_init__(self) -> None:
        if isinstance(self.questions, str):
            raise ValueError(f"composition questions {self.questions!r} must be a list of strings")  # noqa: TRY004
        qs = tuple(self.questions)
        if not qs:
            raise ValueError("composition needs at least one question, got an empty list")
        for i, q in enumerate(qs, 1):
            if not isinstance(q, str) or not q.strip():
                raise ValueError(f"composition question {i} {q!r} is blank")
        mode = str(self.mode).strip().lower()
        if mode not in MODES:
            raise ValueError(f"composition mode {self.mode!r} is not one of {', '.join(MODES)}")
        object.__setattr__(self, "reference", _load(self.reference))
        object.__setattr__(self, "questions", tuple(with_suffix(q) for q in qs))
        object.__setattr__(self, "mode", mode)


def notes(spec: Spec, size: tuple[int, int]) -> list[str]:
    """Messages for the user about how the reference will be used at this size (e.g. a resize)."""
    width, height = check_size(size)
    rw, rh = spec.reference.size
    if (rw, rh) == (width, height):
        return []
    return [f"composition reference {rw}x{rh} was resized to the image size {width}x{height}"]


def render(spec: Spec, size: tuple[int, int]) -> Image.Image:
    """RGBA layer: the reference at 50 % alpha ("transparent") or its non-white pixels opaque ("solid").

    A reference of another size is stretched to `size` with a UserWarning (see notes()).
    """
    width, height = check_size(size)
    ref = spec.reference
    for message in notes(spec, size):
        warnings.warn(message, UserWarning, stacklevel=2)
    if ref.size != (width, height):
        ref = ref.resize((width, height), Image.LANCZOS)
    arr = np.array(ref)
    own_alpha = arr[..., 3].astype(np.uint16)  # a reference with transparency keeps it
    if spec.mode == "transparent":
        alpha = own_alpha * TRANSPARENT_ALPHA // 255
    else:
        ink = (arr[..., :3] < WHITE_LEVEL).any(-1)
        alpha = np.where(ink & (own_alpha > 0), 255, 0)
    arr[..., 3] = alpha.astype(np.uint8)
    arr[arr[..., 3] == 0, :3] = 0  # canonical "nothing drawn"
    return Image.fromarray(arr, "RGBA")


def questions(spec: Spec) -> list[tuple[str, str]]:
    """The user's questions, each expecting "Yes"."""
    return [(q, "Yes") for q in spec.questions]


def describe(spec: Spec) -> str:
    """One line for file metadata."""
    w, h = spec.reference.size
    n = len(spec.questions)
    return f"composition ({spec.mode}) from a {w}x{h} reference, {n} question{'s' if n != 1 else ''}"


def mondrian(size: int = 512) -> Image.Image:
    """A Mondrian-like grid with red annotations: a vertical object and a large field."""
    img = Image.new("RGB", (size, size), (250, 250, 246))
    draw = ImageDraw.Draw(img)
    s = size / 512
    blocks = [
        ((0, 0, 150, 180), (200, 30, 30)),
        ((360, 0, 512, 120), (250, 210, 40)),
        ((0, 400, 260, 512), (30, 60, 150)),
    ]
    for (x0, y0, x1, y1), colour in blocks:
        draw.rectangle([x0 * s, y0 * s, x1 * s, y1 * s], fill=colour)
    for x in (150, 360):
        draw.rectangle([(x - 5) * s, 0, (x + 5) * s, size], fill=(15, 15, 15))
    for y in (180, 400):
        draw.rectangle([0, (y - 5) * s, size, (y + 5) * s], fill=(15, 15, 15))
    red = (255, 0, 0)
    font = ImageFont.load_default(size=max(10, round(20 * s)))
    draw.line([(250 * s, 60 * s), (250 * s, 330 * s)], fill=red, width=max(2, round(6 * s)))
    draw.text((262 * s, 70 * s), "a vertical object\nlike a tree", fill=red, font=font)
    draw.rectangle([280 * s, 420 * s, 500 * s, 500 * s], outline=red, width=max(2, round(4 * s)))
    draw.text((290 * s, 440 * s), "a large field", fill=red, font=font)
    return img


def _layer_at(image: Image.Image | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    image = image.convert("RGBA")
    return np.asarray(image if image.size == size else image.resize(size, Image.LANCZOS))


class Composition(Control):
    """The composition control: a reference and/or red annotations blended over the image, the user's questions."""

    name = NAME
    question = with_suffix(DEFAULT_QUESTION)
    drawn = "red annotations (lines, regions, words)"
    uses_questions = True  # its questions are the user's (the questions box, or --question)
    inputs = (Input("composition_reference", "image",
                    "Reference under your annotations (optional; e.g. an annotated painting)", flag="reference"),
              Input("composition_mode", "radio", "Blend", flag="mode", hint="transparent: the picture shows through",
                    default="transparent", choices=MODES))
    render, questions, describe, notes = (staticmethod(render), staticmethod(questions), staticmethod(describe),
                                          staticmethod(notes))

    def spec(self, values: Mapping[str, object], layer: np.ndarray | None, resolution: int) -> Spec:
        size = (resolution, resolution)
        layers = []
        if values.get("composition_reference") is not None:
            layers.append(_layer_at(values["composition_reference"], size))
        if not blank(layer):
            layers.append(_layer_at(layer, size))
        if not layers or all(blank(x) for x in layers):
            raise MissingValues(self.name, ["composition_reference"],
                                f"the canvas is blank: draw {self.drawn} on it, or upload a reference image")
        asked = [q for q in values.get("questions") or () if str(q).strip()] or [DEFAULT_QUESTION]
        return Spec(Image.fromarray(merge_layers(layers), "RGBA"), tuple(asked),
                    values.get("composition_mode") or "transparent")

    def spec_notes(self, values: Mapping[str, object], layer: np.ndarray | None, resolution: int) -> list[str]:
        ref = values.get("composition_reference")
        if ref is None:
            return []
        w, h = ref.size if isinstance(ref, Image.Image) else np.asarray(ref).shape[1::-1]
        return [] if (w, h) == (resolution, resolution) else [
            f"reference {w}x{h} resized to the generator's {resolution}x{resolution}"]

    def example(self) -> Example:
        return Example("a green field", 5, values={"composition_reference": mondrian(512),
                                                   "composition_mode": "transparent"},
                       questions=["Is there a vertical object like a tree in the image?"])


CONTROL = Composition()
