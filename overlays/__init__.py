"""Visual prompts drawn over generated images, one module per control, all behind one interface.

Each module has a frozen validating ``Spec``, ``render(spec, (W, H)) -> RGBA image`` (alpha 0 where nothing is
drawn), ``questions(spec) -> [(question, answer)]``, ``describe(spec)`` and ``CONTROL``, its `base.Control`: how
a Spec comes from settings, flags or the canvas, and its example. ``CONTROLS`` is the registry the CLI, the app
and the examples read. ``composite`` lays a rendered overlay over differentiable pixels so the VLM loss reaches
the generator.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from . import composition, depth, horizon, line_weight, palette
from .base import Control

# The registry: adding a control is one module plus one entry here.
CONTROLS: dict[str, Control] = {c.name: c for c in (palette.CONTROL, horizon.CONTROL, line_weight.CONTROL,
                                                    depth.CONTROL, composition.CONTROL)}


def overlay_array(overlay: Image.Image | np.ndarray) -> np.ndarray:
    """An overlay as an (H, W, 4) uint8 array."""
    if isinstance(overlay, Image.Image):
        return np.asarray(overlay.convert("RGBA"))
    arr = np.asarray(overlay)
    if arr.ndim != 3 or arr.shape[2] != 4 or arr.dtype != np.uint8:
        raise ValueError(f"overlay array must be (H, W, 4) uint8, got {arr.shape} {arr.dtype}")
    return arr


def composite(pixels: torch.Tensor, overlay: Image.Image | np.ndarray) -> torch.Tensor:
    """pixels * (1 - a) + rgb * a for pixels (B, 3, H, W) or (3, H, W) in [0, 1].

    The weights come straight from the uint8 alpha as (255 - A) / 255 and A / 255, so the pixels'
    weight is exactly 0 under opaque overlay pixels (zero gradient there) and positive elsewhere.
    Dtype and device of `pixels` are kept; the overlay itself carries no gradient.
    """
    if pixels.dim() not in (3, 4) or pixels.shape[-3] != 3:
        raise ValueError(f"pixels must be (B, 3, H, W) or (3, H, W), got {tuple(pixels.shape)}")
    arr = overlay_array(overlay)
    height, width = pixels.shape[-2:]
    if arr.shape[:2] != (height, width):
        raise ValueError(
            f"overlay size {arr.shape[1]}x{arr.shape[0]} does not match image size {width}x{height} (WxH)"
        )
    ov = torch.from_numpy(np.array(arr, copy=True)).to(pixels.device).permute(2, 0, 1)
    alpha = ov[3:4].to(torch.float32)
    keep = ((255.0 - alpha) / 255.0).to(pixels.dtype)
    paint = (ov[:3].to(torch.float32) / 255.0 * alpha / 255.0).to(pixels.dtype)
    return pixels * keep + paint


__all__ = [
    "CONTROLS",
    "Control",
    "composite",
    "composition",
    "depth",
    "horizon",
    "line_weight",
    "overlay_array",
    "palette",
]
