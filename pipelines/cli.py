"""What the command-line tools share: model arguments, input checks, one-line error messages."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from overlays import CONTROLS, composition, depth, horizon, line_weight, palette
from overlays.colors import parse_colors

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


def load_models(args: argparse.Namespace, preset: Preset, generator: bool = True) -> tuple[Generator | None, VLM]:
    gen_device = args.gen_device or default_device()
    gen = load_generator(preset, gen_device) if generator else None
    return gen, load_vlm(preset, args.vlm_device or gen_device)


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


MAX_UPLOAD_SIDE = 2048  # larger uploads are downscaled: no VLM here looks at more than ~13 MP anyway


def fit_upload(image: Image.Image, max_side: int = MAX_UPLOAD_SIDE) -> tuple[Image.Image, str | None]:
    """An uploaded image in RGB, downscaled to `max_side` with a note saying so when it is larger."""
    image = image.convert("RGB")
    w, h = image.size
    if max(w, h) <= max_side:
        return image, None
    scale = max_side / max(w, h)
    small = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    return small, (f"the {w}x{h} image ({w * h / 1e6:.0f} MP) was downscaled to "
                   f"{small.width}x{small.height}")


def load_upload(path: str | Path) -> Image.Image:
    """Read an image a user gave us; say so on stderr when it had to be downscaled."""
    image, note = fit_upload(read_image(path, "RGB"))
    if note:
        print(f"note: {note}", file=sys.stderr)
    return image


def read_overlay(path: str | Path, size: int) -> np.ndarray:
    """An RGBA overlay at the generator's resolution (resized, with a note, if it is not)."""
    im = read_image(path)
    if im.size != (size, size):
        print(f"note: overlay {str(path)!r} is {im.size[0]}x{im.size[1]}; resized to {size}x{size}", file=sys.stderr)
        im = im.resize((size, size), Image.LANCZOS)
    return np.asarray(im)


def pair(text: str, what: str = "point") -> tuple[float, float]:
    """'0.3,0.6' -> (0.3, 0.6); `what` names the value in the error."""
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{what} {text!r} must be two numbers separated by a comma, e.g. 0.3,0.6") from None
    return x, y


def add_control_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("visual prompt (--control)")
    g.add_argument("--control", choices=list(CONTROLS), help="draw this visual prompt and ask its questions")
    g.add_argument("--y", type=float, help="horizon: height as a fraction of the image, from the top")
    g.add_argument("--tilt", type=float, default=0.0, help="horizon: tilt in degrees")
    g.add_argument("--palette", help=f"palette preset: {', '.join(palette.load_presets())}")
    g.add_argument("--colors", help="palette: colours separated by spaces, commas or ';', e.g. "
                                    "'#2b1d0e #8c6d46 rgb(200, 180, 150)'")
    g.add_argument("--palette-image", help="palette: take the dominant colours of this picture")
    g.add_argument("--swatches", type=int, default=5, help="palette: how many colours --palette-image gives")
    g.add_argument("--strip", type=float, default=0.1, help="palette: strip height as a fraction")
    g.add_argument("--a", help="depth: point A as 'x,y' fractions")
    g.add_argument("--b", help="depth: point B as 'x,y' fractions")
    g.add_argument("--relation", default="foreground", help="depth: foreground, background, closer or further")
    g.add_argument("--px", type=int, help="line weight: stroke thickness in pixels")
    g.add_argument("--reference", help="composition: annotated reference image")
    g.add_argument("--mode", default="transparent", help="composition: transparent or solid")


def _require(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n}" for n in names if getattr(args, n) is None]
    if missing:
        raise ValueError(f"--control {args.control} needs {' and '.join(missing)}")


def _palette_spec(args: argparse.Namespace):
    if args.palette_image:
        if not palette.MIN_SWATCHES <= args.swatches <= palette.MAX_SWATCHES:
            raise ValueError(f"--swatches {args.swatches} must be between {palette.MIN_SWATCHES} and "
                             f"{palette.MAX_SWATCHES}")
        colors = palette.extract_palette(load_upload(args.palette_image), args.swatches)
        return palette.Spec(tuple(colors), strip_height=args.strip)
    if args.colors:
        return palette.Spec(tuple(parse_colors(args.colors)), strip_height=args.strip)
    _require(args, "palette")
    return palette.Spec.from_preset(args.palette, strip_height=args.strip)


def _depth_spec(args: argparse.Namespace):
    _require(args, "a", "b")
    return depth.Spec(pair(args.a), pair(args.b), relation=args.relation)


def _line_weight_spec(args: argparse.Namespace):
    _require(args, "px")
    return line_weight.Spec(args.px)


def _horizon_spec(args: argparse.Namespace):
    _require(args, "y")
    return horizon.Spec(args.y, tilt=args.tilt)


def _composition_spec(args: argparse.Namespace):
    _require(args, "reference", "question")
    return composition.Spec(read_image(args.reference), tuple(args.question), mode=args.mode)


SPEC_FROM_ARGS = {"palette": _palette_spec, "horizon": _horizon_spec, "line-weight": _line_weight_spec,
                  "depth": _depth_spec, "composition": _composition_spec}


def control_from_args(args: argparse.Namespace, size: int) -> tuple[np.ndarray, list[tuple[str, str]], str]:
    """The chosen visual prompt as (RGBA overlay at the generator's size, its questions, a description)."""
    module = CONTROLS[args.control]
    spec = SPEC_FROM_ARGS[args.control](args)
    for note in getattr(module, "notes", lambda *_: [])(spec, (size, size)):
        print(f"note: {note}", file=sys.stderr)
    with warnings.catch_warnings():  # the note above already told the user
        warnings.simplefilter("ignore", UserWarning)
        overlay = np.asarray(module.render(spec, (size, size)))
    return overlay, module.questions(spec), module.describe(spec)


@contextmanager
def errors_as_messages() -> Iterator[None]:
    """Bad input ends the command with one line naming the problem, not a traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
