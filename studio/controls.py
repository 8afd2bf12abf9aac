"""The images the Visual prompts page shows around a control: the canvas's value, the overlaid preview, display sizes.

The control itself is built by `overlays.build`, the same function the CLI calls. Pure Python, no gradio import:
testable without a browser; nothing here names a control.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image

import overlays
from overlays.base import QA
from overlays.build import get_control
from pipelines.vlm import from_pil

DISPLAY = 512  # side of the canvas and of the displayed images, whatever the preset's resolution


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
