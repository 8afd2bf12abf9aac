"""A control as the page sets it: its overlay from the settings and the canvas, and the images the page shows.

Pure Python, no gradio import: testable without a browser. Which control does what is read from the registry
(`overlays.CONTROLS`); nothing here names a control.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

import overlays
from overlays import canvas
from overlays.base import MissingValues
from pipelines.checks import read_image
from pipelines.vlm import QA, from_pil

DISPLAY = 512  # side of the canvas and of the displayed images, whatever the preset's resolution


@dataclass
class BuiltControl:
    name: str
    spec: object
    overlay: Image.Image  # RGBA at the generator's resolution: exactly what the VLM sees on top
    questions: list[QA]
    description: str
    notes: list[str] = field(default_factory=list)


def get_control(name: str) -> overlays.Control:
    if name not in overlays.CONTROLS:
        raise ValueError(f"control {name!r} is not one of {', '.join(overlays.CONTROLS)}")
    return overlays.CONTROLS[name]


def drawn_layer(drawing: object) -> np.ndarray | None:
    """The painted layer of an ImageEditor value (or a layer list / array), None when nothing is painted."""
    if drawing is None or canvas.is_blank(drawing):
        return None
    return canvas.as_layer(drawing)


def build_control(name: str, resolution: int, *, drawing: object = None, questions: Sequence[str] = (),
                  **values: object) -> BuiltControl:
    """The overlay (at the generator's resolution), its questions and a description, from the page's settings
    (`values`, by setting key) and, for drawn controls, what was painted on the canvas (`drawing`, any size).
    `questions` are the questions box's questions (a control that asks the user's own questions reads them)."""
    control = get_control(name)
    layer = drawn_layer(drawing) if control.drawn else None
    values = dict(values) | {"questions": list(questions)}
    for setting in control.settings:  # image settings arrive as files: opened here under our own limits
        value = values.get(setting.key)
        if setting.kind == "image" and isinstance(value, (str, Path)):
            values[setting.key] = read_image(value, "RGBA", what=setting.label.split(" (")[0], name=Path(value).name)
    size = (resolution, resolution)
    try:
        spec = control.spec(values, layer, resolution)
    except MissingValues as exc:
        raise ValueError(str(exc)) from None
    notes = control.spec_notes(values, layer, resolution)
    return BuiltControl(name, spec, control.render(spec, size), control.questions(spec), control.describe(spec),
                        notes)


def default_questions(name: str, values: Mapping[str, object] | None = None) -> list[QA]:
    """What the questions box starts with for a control (and its settings)."""
    return get_control(name).default_questions(dict(values or {}))


def editor_value(base: Image.Image | None, size: int = DISPLAY) -> dict[str, object]:
    """A fresh ImageEditor value: the base image scaled to the canvas, nothing drawn."""
    return {"background": None if base is None else for_display(base.convert("RGB"), size), "layers": [],
            "composite": None}


def checkerboard(resolution: int) -> Image.Image:
    """A neutral checkerboard standing in for the base image before one is generated."""
    cells = (np.indices((resolution, resolution)) // max(1, resolution // 8)).sum(0) % 2
    grey = np.where(cells[..., None] == 1, 200, 170).astype(np.uint8)
    return Image.fromarray(np.repeat(grey, 3, axis=2), "RGB")


def overlaid(base: Image.Image | None, overlay: Image.Image | None, resolution: int) -> Image.Image:
    """The base image with the overlay on top, as the VLM sees it (same formula as overlays.composite)."""
    base = checkerboard(resolution) if base is None else base.convert("RGB")
    if base.size != (resolution, resolution):
        base = base.resize((resolution, resolution), Image.LANCZOS)
    if overlay is None:
        return base
    pixels = overlays.composite(from_pil(base)[0], overlay)
    return Image.fromarray((pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy(), "RGB")


def for_display(image: Image.Image | None, size: int = DISPLAY) -> Image.Image | None:
    """Small generator outputs (112 px on `tiny`) upscaled with hard pixel edges so they stay honest."""
    if image is None or image.size == (size, size):
        return image
    method = Image.NEAREST if image.size[0] < size else Image.LANCZOS
    return image.convert("RGB").resize((size, size), method)
