"""What the command-line tools share: model arguments, input checks, one-line error messages (`parser` and `fail`
come from `oneline`, which imports no model library)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from overlays import CONTROLS
from overlays.build import build

from ..checks import fit_upload, read_image
from ..generator import BASE_WEIGHTS, Generator
from ..loading import default_device, load_generator, load_vlm
from ..presets import PRESETS, Preset, get_preset
from ..vlm import VLM
from .oneline import fail, parser  # noqa: F401 (the commands reach both through cli)


def add_model_args(p: argparse.ArgumentParser, vlm: bool = True) -> None:
    p.add_argument("--preset", default="tiny", help=f"one of: {', '.join(PRESETS)}")
    p.add_argument("--generator", help="override the preset's generator: hub id or local folder")
    p.add_argument("--gen-device", default=None, help="device of the generator (default: cuda if present)")
    if vlm:
        p.add_argument("--vlm", help="override the preset's VLM: hub id or local folder")
        p.add_argument("--vlm-device", default=None, help="device of the VLM (default: the generator's)")
    p.add_argument("--text-encoders", choices=["preset", "gpu", "offload"], default="preset",
                   help="offload: the text encoders wait on the CPU and visit the GPU only to encode a new prompt "
                        "(default: the preset's; on for the real presets)")
    p.add_argument("--base-weights", choices=["preset", *BASE_WEIGHTS], default="preset",
                   help="frozen transformer weights: bf16 as loaded, or int8 / fp8 weight-only (torchao; half the "
                        "memory, the LoRA stays fp32); default: the preset's")


def preset_from_args(args: argparse.Namespace) -> Preset:
    preset = get_preset(args.preset).with_sources(args.generator, getattr(args, "vlm", None))
    changes: dict[str, object] = {}
    if getattr(args, "text_encoders", "preset") != "preset":
        changes["offload_text_encoders"] = args.text_encoders == "offload"
    if getattr(args, "base_weights", "preset") != "preset":
        changes["base_weights"] = args.base_weights
    return dataclasses.replace(preset, **changes) if changes else preset


def load_models(args: argparse.Namespace, preset: Preset, generator: bool = True) -> tuple[Generator | None, VLM]:
    gen_device = args.gen_device or default_device()
    gen = load_generator(preset, gen_device) if generator else None
    return gen, load_vlm(preset, args.vlm_device or gen_device)


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


def add_control_args(p: argparse.ArgumentParser) -> None:
    """--control and every registered control's own flags (overlays.CONTROLS)."""
    p.add_argument("--control", choices=list(CONTROLS), action="append",
                   help="draw this visual prompt and ask its questions; repeat it to combine several in one overlay")
    for control in CONTROLS.values():
        control.add_arguments(p)


def control_values(args: argparse.Namespace) -> dict[str, object]:
    """Every control's flags as typed, by input key (absent flags are left out: the Spec's fallbacks apply)."""
    return {flag.key: getattr(args, flag.dest) for control in CONTROLS.values() for flag in control.flags
            if getattr(args, flag.dest, None) is not None}


def control_from_args(args: argparse.Namespace, size: int) -> tuple[np.ndarray, list[tuple[str, str]], list[str]]:
    """The chosen visual prompts (one or several `--control`) as (one RGBA overlay at the generator's size, all
    their questions, one description per control), built by `overlays.build` as the app builds them; what the
    user should know about how the flags were read goes to stderr."""
    names = sorted(args.control, key=list(CONTROLS).index)
    with warnings.catch_warnings():  # the notes below tell the user
        warnings.simplefilter("ignore", UserWarning)
        built = build(names, size, control_values(args), questions=list(args.question or []), cli=True)
    for note in built.notes:
        print(f"note: {note}", file=sys.stderr)
    return np.asarray(built.overlay), built.questions, built.controls or [built.description]


@contextmanager
def errors_as_messages() -> Iterator[None]:
    """Bad input ends the command with one line naming the problem, not a traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        fail("out of memory: try a smaller --size, fewer --steps or a smaller preset (see README, 'Which preset "
             "fits which GPU')")
    except OSError as exc:  # a file that could not be written or read: a read-only folder, a full disk, a folder
        where = f" {exc.filename!r}" if exc.filename else ""
        fail(f"could not write or read{where}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or the CPU allocator's RuntimeError."""
    text = str(exc).lower()
    return (isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in text
            or "can't allocate memory" in text)

