"""Render one example PNG per control over a procedural landscape: ``python -m overlays.examples``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import CONTROLS, composite

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


def example_specs() -> dict[str, object]:
    """Each control's example as a Spec (its settings, its drawing read as a canvas would be)."""
    specs = {}
    for name, control in CONTROLS.items():
        example = control.example()
        layer = None if example.drawing is None else np.asarray(example.drawing.convert("RGBA"))
        specs[name] = control.spec(example.values | {"questions": example.questions}, layer, SIZE)
    return specs


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
