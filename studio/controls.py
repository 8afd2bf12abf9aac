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
from overlays import canvas, layout
from overlays.base import MissingValues, pair
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
    controls: list[str] | None = None  # one line per control when several are combined
    added: list[QA] = field(default_factory=list)  # the combined controls' questions (asked beside the box's)


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
                  combined: bool = False, **values: object) -> BuiltControl:
    """The overlay (at the generator's resolution), its questions and a description, from the page's settings
    (`values`, by setting key) and, for drawn controls, what was painted on the canvas (`drawing`, any size).
    `questions` are the questions box's questions (a control that asks the user's own questions reads them).
    `combined`: set by its settings alone, beside the canvas's Control (a missing value names the setting)."""
    control = get_control(name)
    layer = drawn_layer(drawing) if control.drawn else None
    values = dict(values) | {"questions": list(questions)}
    try:
        for setting in control.settings:  # files opened under our own limits, 'x, y' text parsed, empty boxes None
            value = values.get(setting.key)
            if setting.kind == "image" and isinstance(value, (str, Path)):
                values[setting.key] = read_image(value, "RGBA", what=setting.name, name=Path(value).name)
            elif setting.kind in ("point", "number") and (value is None or not str(value).strip()):
                values[setting.key] = None
            elif setting.kind == "point":
                values[setting.key] = pair(value, setting.name)
            elif setting.kind == "number" and isinstance(value, str):
                values[setting.key] = number(value, setting.name)
        spec = control.spec(values, layer, resolution)
    except MissingValues as exc:
        if not combined:
            raise
        names = {s.key: s.name for s in control.settings}
        raise ValueError(f"combined control {name} needs {' and '.join(names.get(k, k) for k in exc.keys)} in its "
                         "settings (the canvas is the Control's)") from None
    except ValueError as exc:
        if not combined:
            raise
        raise ValueError(f"combined control {name}: {exc}") from None
    size = (resolution, resolution)
    notes = control.spec_notes(values, layer, resolution)
    return BuiltControl(name, spec, control.render(spec, size), control.questions(spec), control.describe(spec),
                        notes)


def build_controls(name: str, combine: Sequence[str], resolution: int, *, drawing: object = None,
                   questions: Sequence[str] = (), **values: object) -> BuiltControl:
    """`build_control` for the canvas's control plus the controls ticked to combine with it (set by their settings
    only: the canvas belongs to the first), laid out in one overlay by `overlays.layout.combine` (registry order;
    marks that would overlap are refused)."""
    main = build_control(name, resolution, drawing=drawing, questions=questions, **values)
    others = [n for n in combine if n != name]
    if not others:
        return main
    built = [main, *(build_control(n, resolution, questions=questions, combined=True, **values) for n in others)]
    order = list(overlays.CONTROLS)
    built.sort(key=lambda b: order.index(b.name))
    placed = layout.combine([(get_control(b.name), b.spec) for b in built], (resolution, resolution))
    added = [qa for b in built if b is not main for qa in b.questions]
    return BuiltControl(" + ".join(b.name for b in built), placed.specs, placed.overlay, placed.questions,
                        "; ".join(placed.descriptions), [n for b in built for n in b.notes], placed.descriptions,
                        [qa for qa in added if qa not in main.questions])


def number(text: str, what: str) -> float:
    """A number typed in a settings box; ValueError naming the setting when it is not one."""
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"{what} {text.strip()!r} is not a number") from None


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
