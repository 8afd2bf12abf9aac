"""Shared helpers for the app tests: an in-process server on the tiny preset, and gradio_client inputs.

Test modules import the fixture: `from app_fixtures import server_fixture  # noqa: F401` (fixture name "server").
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from tests

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

PROMPT, SEED = "a tropical beach at sunset", 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    demo: object
    url: str
    root: Path

    def client(self):
        from gradio_client import Client

        return Client(self.url, verbose=False)


@contextmanager
def running(tmp: Path, preset: str = "tiny", **build_kwargs) -> Iterator[Server]:
    """build_demo(preset, ...) launched on a free local port, closed afterwards."""
    import studio

    demo = studio.build_demo(preset, output_dir=tmp, **build_kwargs)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            show_error=True)  # as app.main launches it
    try:
        yield Server(demo, url, Path(tmp))
    finally:
        demo.close()


@pytest.fixture(scope="module", name="server")
def server_fixture(tmp_path_factory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("studio")) as server:
        yield server


def save_png(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def horizon_layer(size: int = 512, y: float = 0.3, tilt_px: int = 20, thickness: int = 8) -> np.ndarray:
    """An RGBA layer with a hand-drawn-like red stroke across the image, rising to the right."""
    layer = np.zeros((size, size, 4), dtype=np.uint8)
    for x in range(20, size - 20):
        row = int(round(y * size + tilt_px * (0.5 - x / size)))
        layer[row - thickness // 2: row + thickness - thickness // 2, x] = (255, 0, 0, 255)
    return layer


def dots_layer(points, size: int = 512, radius: int = 10) -> np.ndarray:
    layer = np.zeros((size, size, 4), dtype=np.uint8)
    rows, cols = np.mgrid[0:size, 0:size]
    for x, y in points:
        layer[(cols - x * size) ** 2 + (rows - y * size) ** 2 <= radius**2] = (255, 0, 0, 255)
    return layer


def editor(tmp: Path, *layers: np.ndarray, size: int = 512) -> dict:
    """An ImageEditor value for gradio_client: a grey background and the given RGBA layers."""
    from gradio_client import handle_file

    bg = save_png(tmp / "background.png", np.full((size, size, 3), 128, dtype=np.uint8))
    paths = [handle_file(save_png(tmp / f"layer{i}.png", layer)) for i, layer in enumerate(layers)]
    return {"background": handle_file(bg), "layers": paths, "composite": None}


def pixels(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()
