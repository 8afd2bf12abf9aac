"""Composition: a user's reference (e.g. an abstract painting annotated in red) blended over the image."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ._common import check_size, with_suffix

NAME = "composition"
MODES = ("transparent", "solid")
WHITE_LEVEL = 240  # all channels >= this count as paper white in "solid" mode
TRANSPARENT_ALPHA = 128  # 50 % of 255, as in the paper's blended reference


def _load(reference: Image.Image | str | os.PathLike[str]) -> Image.Image:
    """The reference as an RGBA image; ValueError naming the path if it cannot be read."""
    if isinstance(reference, Image.Image):
        return reference.convert("RGBA")
    if not isinstance(reference, (str, os.PathLike)):
        # ValueError, not TypeError: every bad user input raises ValueError (see _common)
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
