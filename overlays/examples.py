"""Render one example PNG per control over a procedural landscape: ``python -m overlays.examples``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from . import CONTROLS, composite, composition, depth, horizon, line_weight, palette

OUT_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
SIZE = 512


def _lerp(a: tuple[float, ...], b: tuple[float, ...], t: np.ndarray) -> np.ndarray:
    return np.asarray(a) + (np.asarray(b) - np.asarray(a)) * t[..., None]


def landscape(size: int = SIZE, horizon_y: float = 0.55) -> Image.Image:
    """Sky gradient, sun with a glow, sea with soft waves and a curved sandy beach."""
    rows, cols = np.mgrid[0:size, 0:size] / (size - 1)
    sky = _lerp((40, 90, 170), (250, 200, 150), np.clip(rows / horizon_y, 0, 1) ** 1.5)
    sun_x, sun_y = 0.68, horizon_y - 0.14
    d = np.hypot(cols - sun_x, rows - sun_y)
    sky = sky + 90 * np.exp(-((d / 0.12) ** 2))[..., None] * np.array([1.0, 0.8, 0.4])
    sky = np.where((d < 0.06)[..., None], np.array([255, 236, 180]), sky)
    depth_t = np.clip((rows - horizon_y) / (1 - horizon_y), 0, 1)
    sea = _lerp((30, 70, 120), (60, 150, 170), depth_t)
    waves = np.sin(cols * 60 + np.sin(rows * 25) * 2) * np.sin(rows * 140)
    sea = sea + 8 * waves[..., None]
    glitter = np.exp(-(((cols - sun_x) / 0.05) ** 2)) * (waves > 0.6)
    sea = sea + 70 * glitter[..., None]
    shore = 0.8 - 0.06 * np.sin(cols * np.pi * 1.3 + 0.4)
    sand = _lerp((225, 200, 150), (200, 170, 120), np.clip((rows - shore) / (1 - shore + 1e-6), 0, 1))
    img = np.where((rows < horizon_y)[..., None], sky, np.where((rows < shore)[..., None], sea, sand))
    foam = np.abs(rows - shore) < 0.006
    img = np.where(foam[..., None], np.array([245, 245, 240]), img)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def mondrian(size: int = SIZE) -> Image.Image:
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


def example_specs() -> dict[str, object]:
    """One representative spec per control."""
    return {
        palette.NAME: palette.Spec.from_preset("retro"),
        horizon.NAME: horizon.Spec(0.35, tilt=4.0),
        line_weight.NAME: line_weight.Spec(6),
        depth.NAME: depth.Spec((0.25, 0.88), (0.7, 0.5), "foreground"),
        composition.NAME: composition.Spec(
            mondrian(), ["Is there a vertical object like a tree in the image?"], "transparent"
        ),
    }


def main(out_dir: Path | None = None) -> list[Path]:
    """Write <out_dir>/<control>.png for every control and return the paths."""
    out = Path(out_dir) if out_dir is not None else OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    base = torch.from_numpy(np.array(landscape())).permute(2, 0, 1).float() / 255
    paths = []
    for name, spec in example_specs().items():
        module = CONTROLS[name]
        mixed = composite(base, module.render(spec, (SIZE, SIZE)))
        arr = (mixed.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        path = out / f"{name}.png"
        Image.fromarray(arr, "RGB").save(path)
        paths.append(path)
        print(f"{path}: {module.describe(spec)}")
    return paths


if __name__ == "__main__":
    main()
