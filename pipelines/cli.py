"""What the command-line tools share: model arguments, input checks, one-line error messages."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .generator import Generator
from .loading import default_device, load_generator, load_vlm
from .presets import PRESETS, Preset, get_preset
from .vlm import VLM

MAX_PROMPT_CHARS = 2000


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints the usage too; one line is easier to read
        self.exit(2, f"error: {message} (see --help)\n")


def parser(description: str) -> argparse.ArgumentParser:
    return OneLineParser(description=description)


def add_model_args(p: argparse.ArgumentParser, vlm: bool = True) -> None:
    p.add_argument("--preset", default="tiny", help=f"one of: {', '.join(PRESETS)}")
    p.add_argument("--generator", help="override the preset's generator: hub id or local folder")
    p.add_argument("--gen-device", default=None, help="device of the generator (default: cuda if present)")
    if vlm:
        p.add_argument("--vlm", help="override the preset's VLM: hub id or local folder")
        p.add_argument("--vlm-device", default=None, help="device of the VLM (default: the generator's)")
        p.add_argument("--offload-text-encoders", action="store_true",
                       help="move the text encoders to the CPU once the prompt is encoded")


def preset_from_args(args: argparse.Namespace) -> Preset:
    return get_preset(args.preset).with_sources(args.generator, getattr(args, "vlm", None))


def load_models(args: argparse.Namespace, preset: Preset) -> tuple[Generator, VLM]:
    gen_device = args.gen_device or default_device()
    return load_generator(preset, gen_device), load_vlm(preset, args.vlm_device or gen_device)


def check_text(text: str, what: str) -> str:
    text = (text or "").strip()
    if not text:
        raise ValueError(f"the {what} is empty")
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"the {what} has {len(text)} characters; at most {MAX_PROMPT_CHARS}")
    return text


def check_prompt(prompt: str) -> str:
    return check_text(prompt, "prompt")


def read_image(path: str | Path, mode: str = "RGBA") -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist")
    try:
        with Image.open(path) as im:
            return im.convert(mode)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"image {str(path)!r} is not a readable image ({exc.__class__.__name__})") from None


def read_overlay(path: str | Path, size: int) -> np.ndarray:
    """An RGBA overlay at the generator's resolution (resized, with a note, if it is not)."""
    im = read_image(path)
    if im.size != (size, size):
        print(f"note: overlay {str(path)!r} is {im.size[0]}x{im.size[1]}; resized to {size}x{size}", file=sys.stderr)
        im = im.resize((size, size), Image.LANCZOS)
    return np.asarray(im)


@contextmanager
def errors_as_messages() -> Iterator[None]:
    """Bad input ends the command with one line naming the problem, not a traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
