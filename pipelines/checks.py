"""Input checks and limits, in one place: each limit has one name; each check raises ValueError naming the value.

The engine's limits are what the library and the CLI accept; the app, serving strangers on a shared GPU, has
tighter ones of its own (the `APP_` names). A UI turns exactly these ValueErrors into its messages.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# --- the engine (library and command line) ---------------------------------------------------------------------------
MAX_SEED = 2**32 - 1  # what torch.Generator.manual_seed and the page's number box take
MAX_STEPS = 10_000  # optimization steps of one run
MAX_TOTAL_STEPS = 40_000  # steps behind one LoRA over the runs that continued it
MAX_LORA_SCALE = 10.0  # the scale a LoRA is applied at
MAX_RANK = 512
MAX_PROMPT_CHARS = 2000
MAX_QUESTION_CHARS = 500
MAX_ANSWER_CHARS = 100  # an expected answer is a word or a short phrase; its tokens are the loss
MAX_EVAL_SEEDS = 64  # unseen seeds judged at the end of a run
MAX_NOISES = 16  # initial noises per optimization step (each a forward and backward pass)
MAX_VIEWS = 16  # views of each image the judge sees per step
MAX_KEEP = 100.0  # weight of the preservation term
MAX_UPLOAD_SIDE = 2048  # larger images are downscaled: no VLM here looks at more than ~13 MP anyway
MAX_GENERATE_SIDE = 2048  # larger images would need more memory than the generators here were made for
MAX_IMAGE_SIDE = 8192  # larger images are refused before they are decoded (decompression bombs)
MAX_IMAGE_PIXELS = 40_000_000
MAX_IMAGE_BYTES = 64 * 2**20
MAX_TILT = 45.0  # degrees a drawn horizon may tilt either way
MIN_SWATCHES, MAX_SWATCHES = 2, 8  # colours of a palette strip
MIN_DISTANCE = 0.05  # between depth points A and B, of the image diagonal: closer dots and labels collide
MAX_CANDIDATES = 16  # prompts refinement writes, generates and judges in one call

# --- the app (tighter: one shared GPU, strangers) --------------------------------------------------------------------
APP_MAX_STEPS = 500
APP_MAX_SCALE = 5.0  # the LoRA-scale slider
APP_MAX_QUESTIONS = 8
APP_MAX_VIEWS = 8  # judged views per image: each runs the VLM again
APP_MAX_NOISES = 4  # noises per step: each runs the whole step again
APP_MAX_UPLOAD_MB = 512
MAX_STACKED = 4  # LoRAs the app applies on top of the first one
MAX_QUEUE = 16  # jobs that may wait in the app's line (`app.py --max-queue` overrides it)
APP_MAX_SELF_IMPROVE_PROMPTS = 16  # prompts of one self-improve round in the app (each: candidates, images, judging)
APP_MAX_SELF_IMPROVE_CANDIDATES = 8
# ZeroGPU (Hugging Face's shared GPUs for Spaces), as its documentation and the `spaces` package say in 2026: a
# `large` slice is half an RTX Pro 6000 Blackwell (48 GB), `xlarge` the whole card (96 GB) at twice the quota; on
# Blackwell a large request's seconds are counted 1.5 times; a request counted over the maximum fails at the queue
# ("ZeroGPU illegal duration"). The maximum is not documented: 300 s is the figure seen for signed-in users.
ZEROGPU_SLICES_GIB = {"large": 47.4, "xlarge": 94.9}  # half and all of the card's 101,973,950,464 bytes (`spaces`)
ZEROGPU_COUNTED = {"large": 1.5, "xlarge": 2.0}  # requested seconds -> seconds counted against the maximum
ZEROGPU_MAX_SECONDS = 300


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_finite(value: object, what: str) -> float:
    """A finite real number (bools refused), with no range: ValueError naming `what` and the value."""
    if not _is_real(value):
        raise ValueError(f"{what} {value!r} is not a finite number")
    return float(value)


def check_int(value: object, what: str, lo: int, hi: int) -> int:
    """A whole number in [lo, hi]; integral floats (what a number box sends) are accepted."""
    if not _is_real(value) or float(value) != int(value) or not lo <= int(value) <= hi:
        raise ValueError(f"{what} {value!r} must be a whole number from {lo} to {hi}")
    return int(value)


def check_real(value: object, what: str, lo: float, hi: float) -> float:
    """A finite number in [lo, hi]."""
    if not _is_real(value) or not lo <= float(value) <= hi:
        raise ValueError(f"{what} {value!r} must be a number from {lo:g} to {hi:g}")
    return float(value)


def check_text(text: object, what: str, max_chars: int = MAX_PROMPT_CHARS) -> str:
    """Non-empty text (spaces and control characters alone count as empty), at most `max_chars`."""
    if text is not None and not isinstance(text, str):
        raise ValueError(f"the {what} {text!r} is not text")
    text = (text or "").strip()
    if not "".join(ch for ch in text if ch.isprintable()).strip():
        raise ValueError(f"the {what} is empty")
    if len(text) > max_chars:
        raise ValueError(f"the {what} has {len(text)} characters; at most {max_chars}")
    return text


def check_prompt(prompt: object) -> str:
    return check_text(prompt, "prompt")


def check_seed(seed: object) -> int:
    return check_int(seed, "seed", 0, MAX_SEED)


def check_steps(steps: object, max_steps: int = MAX_STEPS) -> int:
    return check_int(steps, "steps", 1, max_steps)


def check_scale(scale: object, max_scale: float = MAX_LORA_SCALE) -> float:
    return check_real(scale, "LoRA scale", 0.0, max_scale)


def check_generate_size(size: object, what: str = "image size") -> int:
    """An image side to generate, refused before anything is allocated."""
    return check_int(size, what, 16, MAX_GENERATE_SIDE)


def check_rank(rank: object) -> int:
    return check_int(rank, "LoRA rank", 1, MAX_RANK)


def check_learning_rate(lr: object) -> float:
    if not _is_real(lr) or not 0 < float(lr) < 1:
        raise ValueError(f"learning rate {lr!r} must be a number in (0, 1)")
    return float(lr)


def check_alpha(alpha: object) -> float:
    if not _is_real(alpha) or not float(alpha) > 0:
        raise ValueError(f"LoRA alpha {alpha!r} must be a positive number")
    return float(alpha)


def check_target_p(target_p: float | None) -> float | None:
    """Early stopping's target: None (off) or a probability strictly between 0 and 1."""
    if target_p is not None and (not _is_real(target_p) or not 0 < target_p < 1):
        raise ValueError(f"target P {target_p!r} must be between 0 and 1 (exclusive)")
    return target_p


def check_noises(noises: int) -> int:
    return check_int(noises, "noises per step", 1, MAX_NOISES)


def check_views(views: int) -> int:
    return check_int(views, "judged views", 0, MAX_VIEWS)


def check_keep(keep: float) -> float:
    return check_real(keep, "preservation weight", 0.0, MAX_KEEP)


def check_renoise(renoise: tuple[float, float] | None) -> tuple[float, float] | None:
    """None, or a re-noising range 0 < lo <= hi <= 1."""
    if renoise is None:
        return None
    lo, hi = (float(v) for v in renoise)
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"re-noising range {lo:g},{hi:g} must satisfy 0 < LO <= HI <= 1")
    return lo, hi


def read_image(path: str | Path, mode: str = "RGBA", what: str = "image", name: str | None = None) -> Image.Image:
    """An image file given by a user, opened under our own limits and converted to `mode`.

    Refused with one line naming the file: a missing file, one over MAX_IMAGE_BYTES, anything PIL cannot read
    (SVG, text, a truncated PNG), more than MAX_IMAGE_SIDE pixels a side (decompression bombs are refused from
    the header, before any pixel is decoded). Animated images give their first frame; 16-bit and float images
    are scaled to 8 bits; CMYK, palette and grey modes are converted. `what` is how the user knows the field
    (e.g. "Image A"), `name` how they know the file (an upload's own name rather than a temporary path).
    """
    path = Path(path)
    shown = f"{what} {(name or str(path))!r}"
    if not path.is_file():
        raise FileNotFoundError(f"{shown} does not exist" if not path.exists() else f"{shown} is not a file")
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise ValueError(f"{shown} is {size / 2**20:.0f} MB; at most {MAX_IMAGE_BYTES // 2**20} MB")
    try:
        with Image.open(path) as im:
            return _converted(im, mode, shown)
    except Image.DecompressionBombError:  # PIL refuses it from the header, before decoding
        raise ValueError(f"{shown} is over {MAX_IMAGE_PIXELS / 1e6:.0f} MP; at most {MAX_IMAGE_SIDE} pixels a side "
                         f"and {MAX_IMAGE_PIXELS / 1e6:.0f} MP") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        reason = "not an image PIL can read" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise ValueError(f"{shown} is not a readable image ({reason})") from None


def _converted(im: Image.Image, mode: str, shown: str) -> Image.Image:
    w, h = im.size
    if max(w, h) > MAX_IMAGE_SIDE or w * h > MAX_IMAGE_PIXELS:
        raise ValueError(f"{shown} is {w}x{h} pixels; at most {MAX_IMAGE_SIDE} pixels a side and "
                         f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP")
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)  # an animation: its first frame
    im.load()
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float: scale to 8 bits, not clip
        arr = np.asarray(im, dtype=np.float64)
        top = arr.max() if arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / top * 255, 0, 255).astype(np.uint8), "L")
    return im.convert(mode)


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


def check_output(path: str | Path, suffixes: tuple[str, ...], what: str = "--out") -> Path:
    """An output file that can be written, checked before any model loads: the right suffix, not a folder, not
    under a regular file, in a folder we may write (a missing folder is fine: it is created)."""
    path = Path(path)
    shown = f"{what} {str(path)!r}"
    if suffixes and path.suffix.lower() not in suffixes:
        raise ValueError(f"{shown} must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise ValueError(f"{shown} is a folder; give a file name")
    check_writable_below(path.parent, shown)
    return path


def check_writable_below(folder: Path, shown: str) -> None:
    """The nearest existing folder at or above `folder` is a folder we may write in (what is missing is created)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{shown} cannot be written: {str(folder)!r} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{shown} cannot be written: the folder {str(folder)!r} is read-only")


def check_output_dir(path: str | Path, what: str = "--out-dir") -> Path:
    """A folder to write into, checked before any model loads: not a file, not under a file, in a folder we may
    write (a missing one is created later)."""
    path = Path(path)
    shown = f"{what} {str(path)!r}"
    if path.exists() and not path.is_dir():
        raise ValueError(f"{shown} is a file, not a folder")
    check_writable_below(path, shown)
    return path


# --- image-pivot refinement (PRIP) -----------------------------------------------------------------------------------
MAX_PIVOTS = 8  # images of the user's prompt the pivot is chosen from: each is generated and judged


def check_pivots(pivots: object) -> int:
    """How many images the pivot is chosen from, 1 to MAX_PIVOTS."""
    return check_int(pivots, "number of pivot images", 1, MAX_PIVOTS)


def check_gpu_seconds(seconds: float, size: str, shorten: str) -> int:
    """A ZeroGPU request of `seconds` on a `size` slice, refused before it queues when ZeroGPU would count it over
    `ZEROGPU_MAX_SECONDS`; `shorten` says how to make it shorter. Returns the seconds to request."""
    counted = seconds * ZEROGPU_COUNTED[size]
    if counted > ZEROGPU_MAX_SECONDS:
        raise ValueError(f"this request needs about {seconds:.0f} s of GPU ({counted:.0f} s as ZeroGPU counts a "
                         f"{size} slice), over the {ZEROGPU_MAX_SECONDS} s one request may have: {shorten}")
    return max(1, round(seconds))


def on_zerogpu() -> bool:
    """Whether this process runs on a ZeroGPU Space (the `spaces` package reads the same variable)."""
    return os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "t", "true")


def check_compile(compile: bool) -> bool:
    """torch.compile of the gradient step, refused on ZeroGPU in one line: ZeroGPU does not run torch.compile, and
    its ahead-of-time route (torch.export + AOTInductor, `spaces.aoti_*`) compiles inference graphs, not the
    backward pass this option compiles."""
    if compile and on_zerogpu():
        raise ValueError("--compile is not available on ZeroGPU: it does not run torch.compile, and its "
                         "ahead-of-time compilation covers inference, not the gradient step; run without it")
    return compile
