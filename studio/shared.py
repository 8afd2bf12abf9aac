"""What the tabs share: the loaded models, the GPU functions (ZeroGPU), user-facing errors, the per-user session
and the app's context (preset, limits, where LoRA files go).

Every model-facing function here is a plain function of plain arguments, decorated with `spaces.GPU` when the
`spaces` package is importable (Hugging Face ZeroGPU) and unchanged without it: ZeroGPU pickles arguments and
results, and runs them in a forked worker, so nothing here keeps per-user state in globals.
"""

from __future__ import annotations

try:  # ZeroGPU: `spaces` must be imported before anything touches CUDA
    import spaces
except ImportError:
    spaces = None

import functools
import gc
import inspect
import logging
import os
import re
import shutil
import threading
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import torch
from PIL import Image, UnidentifiedImageError

from pipelines import judge, refine, self_reward, world
from pipelines.checks import APP_MAX_UPLOAD_MB, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, read_image
from pipelines.generator import Generator
from pipelines.loading import default_device, load_generator, load_vlm
from pipelines.presets import Preset, get_preset
from pipelines.vlm import VLM

from . import questions as question_box
from .runs import gpu_seconds, run

log = logging.getLogger("studio")

MAX_QUEUE = 16
GPU = "gpu"  # concurrency id shared by every event that runs the models: one such job at a time
OOM_MESSAGE = ("Out of GPU memory while {what}. Try a smaller resolution or a smaller preset (e.g. PRESET=sana, or "
               "tiny); your inputs are kept and the app keeps serving.")
GPU_EVENT = dict(concurrency_id=GPU, concurrency_limit=1)  # every event that runs the models
LIGHT_EVENT = dict(queue=False, api_visibility="private", show_progress="hidden")  # page-only updates


@dataclass
class App:
    """What every handler needs to know about the app it serves (one per `build_demo`)."""

    preset: Preset
    root: Path  # the sessions' folders of LoRA files
    max_upload_bytes: int = APP_MAX_UPLOAD_MB * 2**20
    max_queue: int = MAX_QUEUE

    @property
    def name(self) -> str:
        return self.preset.name

    @property
    def resolution(self) -> int:
        return self.preset.resolution


# ---------- models: loaded once per process, shared by every user ------------------------------------------------

_MODELS: dict[str, tuple[Generator, VLM]] = {}
_LOAD_LOCK = threading.Lock()
MODEL_LOCK = threading.Lock()  # held while a job uses the shared pipeline (a run's worker holds it throughout)
DEVICES: dict[str, str | None] = {"generator": None, "vlm": None}


def models(preset_name: str) -> tuple[Generator, VLM]:
    with _LOAD_LOCK:
        if preset_name not in _MODELS:
            preset = get_preset(preset_name)
            gen_device = DEVICES["generator"] or default_device()
            _MODELS[preset_name] = (load_generator(preset, gen_device), load_vlm(preset, DEVICES["vlm"] or gen_device))
        return _MODELS[preset_name]


# ---------- GPU functions: plain arguments in, plain results out -------------------------------------------------


def on_gpu(duration):
    """spaces.GPU with a duration (seconds, or a function of the call's arguments) when on Spaces."""
    if spaces is None:
        return lambda fn: fn
    size = os.environ.get("ZEROGPU_SIZE")  # "large" (48 GB, default) or "xlarge" (96 GB)
    return spaces.GPU(duration=duration, **({"size": size} if size else {}))


def image_seconds(preset_name: str, *args, **kwargs) -> int:
    return 20 + 2 * get_preset(preset_name).inference_steps


def run_seconds(preset_name: str, prompt: str, seed: int, qa_pairs: list, steps: int, *args,
                steering: dict | None = None, **kwargs) -> int:
    return gpu_seconds(get_preset(preset_name), steps, len(qa_pairs), steering)


def score_seconds(preset_name: str, prompt: str, images: list, sampled: bool) -> int:
    return 15 + len(images) * (40 if sampled else 10)


def refine_seconds(preset_name: str, prompt: str, n: int, *args, **kwargs) -> int:
    return 20 + (n + 1) * (2 * get_preset(preset_name).inference_steps + 10)  # image, scores and a reason each


def pivot_seconds(preset_name: str, prompt: str, n: int, temperature: float, top_p: float, seed: int,
                  pivots: int) -> int:
    return 20 + (n + 1 + pivots) * (2 * get_preset(preset_name).inference_steps + 10)


@on_gpu(image_seconds)
def gpu_generate(preset_name: str, prompt: str, seed: int, lora_path: str | None = None, scale: float = 1.0,
                 loras: list[tuple[str, float]] = ()):
    generator, _ = models(preset_name)
    with MODEL_LOCK:
        return generator.generate(prompt, seed, lora_path=lora_path, scale=scale, loras=loras)


@on_gpu(image_seconds)
def gpu_draft(preset_name: str, prompt: str, n: int) -> tuple[list[str], str]:
    _, vlm = models(preset_name)
    with MODEL_LOCK:
        return question_box.draft_questions(vlm, prompt, n)


@on_gpu(run_seconds)
def gpu_run(preset_name: str, prompt: str, seed: int, qa_pairs: list, steps: int, out_path: str, overlay=None,
            overlay_description: str = "", controls: list[str] | None = None, init_path: str | None = None,
            stop_file: str | None = None, steering: dict | None = None):
    generator, vlm = models(preset_name)
    yield from run(generator, vlm, prompt, seed, qa_pairs, steps=steps, out_path=out_path, lock=MODEL_LOCK,
                   overlay=overlay, overlay_description=overlay_description, target_p=generator.preset.target_p,
                   controls=controls, init_path=init_path, stop_file=stop_file, steering=steering)


@on_gpu(score_seconds)
def gpu_score(preset_name: str, prompt: str, images: list, sampled: bool):
    _, vlm = models(preset_name)
    with MODEL_LOCK:
        reports = [judge.judge(vlm, image, prompt, sampled=sampled) for image in images]
        comparison = judge.compare(vlm, images[0], images[1], prompt) if len(images) == 2 else None
    return reports, comparison


@on_gpu(refine_seconds)
def gpu_refine(preset_name: str, prompt: str, n: int, temperature: float, top_p: float, seed: int,
               vlm_lora: str | None = None):
    generator, vlm = models(preset_name)
    with MODEL_LOCK:
        return refine.refine(generator, vlm, prompt, n, temperature, top_p, seed=seed, image_seed=seed,
                             vlm_lora=vlm_lora, reasons=True)


@on_gpu(pivot_seconds)
def gpu_refine_pivot(preset_name: str, prompt: str, n: int, temperature: float, top_p: float, seed: int,
                     pivots: int):
    generator, vlm = models(preset_name)
    with MODEL_LOCK:
        return refine.pivot(generator, vlm, prompt, n, pivots, temperature, top_p, seed=seed, image_seed=seed,
                            reasons=True)


def self_improve_seconds(preset_name: str, prompts: list[str], n: int, *args, **kwargs) -> int:
    per_image = 2 * get_preset(preset_name).inference_steps + 10
    return 60 + len(prompts) * ((n + 1) + 2 * SELF_IMPROVE_SAMPLES) * per_image  # pairs, then before and after


SELF_IMPROVE_SAMPLES = 2  # rewrites per prompt behind the page's before/after figures


@on_gpu(self_improve_seconds)
def gpu_self_improve(preset_name: str, prompts: list[str], n: int, out_dir: str):
    generator, vlm = models(preset_name)
    truth = world.scores if generator.preset.known_scenes else None  # a toy world measures from pixels
    with MODEL_LOCK:
        return self_reward.self_improve(generator, vlm, prompts, out_dir, n=n, samples=SELF_IMPROVE_SAMPLES,
                                        truth=truth)


@on_gpu(image_seconds)
def gpu_recreate(preset_name: str, image, seed: int):
    generator, vlm = models(preset_name)
    with MODEL_LOCK:
        return refine.recreate(generator, vlm, image, seed)


# ---------- errors: what the user reads --------------------------------------------------------------------------


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError)
                                                        and "out of memory" in str(exc).lower())


def user_error(exc: Exception, what: str) -> gr.Error:
    """The one-line message a user reads for an exception raised while `what`."""
    if isinstance(exc, gr.Error):
        return exc
    if is_oom(exc):
        # The traceback's frames still hold the failed step's tensors: drop them before freeing the cache.
        traceback.clear_frames(exc.__traceback__)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning("out of memory while %s", what)
        return gr.Error(OOM_MESSAGE.format(what=what), print_exception=False)
    if isinstance(exc, (ValueError, FileNotFoundError)):
        text = str(exc).strip("'\"")
        return gr.Error(text[:1].upper() + text[1:], print_exception=False)
    log.exception("failed while %s", what)
    return gr.Error(f"Something went wrong while {what} ({type(exc).__name__}: {exc}). The app keeps serving.",
                    print_exception=False)


def user_errors(what: str):
    """Turn bad input (ValueError), out-of-memory and unexpected failures into a gr.Error message."""

    def decorate(fn):
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as exc:
                    raise user_error(exc, what) from None
        else:
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:
                    raise user_error(exc, what) from None
        return wrapper

    return decorate


# ---------- what Gradio itself refuses, in our words --------------------------------------------------------------


def field_name(block) -> str:
    """How the page names an input: its label up to any explanation, else its elem_id, else its kind."""
    label = (getattr(block, "label", None) or "").split(" (")[0].split(":")[0].strip()
    return label or getattr(block, "elem_id", None) or block.get_block_name()


def unreadable(exc: BaseException) -> str:
    """Why a value could not be read, in a few words (never the payload or a traceback)."""
    if isinstance(exc, Image.DecompressionBombError):
        return f"an image over {MAX_IMAGE_PIXELS / 1e6:.0f} MP; at most {MAX_IMAGE_SIDE} pixels a side"
    if isinstance(exc, UnidentifiedImageError):
        return "not a readable image"
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"could not be read ({first[:160]})"


def endpoint(block_fn) -> str:
    return f"/{block_fn.api_name}" if getattr(block_fn, "api_name", None) else f"the event {block_fn.name!r}"


def guard_api(demo: gr.Blocks) -> None:
    """Calls that Gradio refuses before our handlers run get one line naming the field, not its internal
    multi-line message: a value its component cannot read (a canvas layer that is not an image, a decompression
    bomb), a value of the wrong kind, and a call with the wrong number of values (Gradio refuses too few with a
    dump of its objects and silently drops extras; we refuse both). Set on the instance, as `as_sent` is."""
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # PIL refuses twice this from the header, before decoding
    preprocess_data = demo.preprocess_data

    def validate_inputs(block_fn, inputs: list) -> None:
        if len(inputs) != len(block_fn.inputs):
            names = ", ".join(field_name(b) for b in block_fn.inputs if not getattr(b, "stateful", False))
            raise gr.Error(f"{endpoint(block_fn)} takes {len(block_fn.inputs)} values ({names}); "
                           f"{len(inputs)} {'was' if len(inputs) == 1 else 'were'} sent", print_exception=False)

    for block in demo.blocks.values():
        if isinstance(block, gr.components.Component):
            block.preprocess = reading_errors_named(block, block.preprocess)

    async def checked_preprocess_data(block_fn, inputs, state, explicit_call=False):
        try:
            return await preprocess_data(block_fn, inputs, state, explicit_call)
        except gr.Error:
            raise
        except Exception as exc:  # e.g. the component's data model refused the value's shape
            blamed = next((b for b, v in zip(block_fn.inputs, inputs, strict=False)
                           if v is not None and getattr(b, "data_model", None) and not fits(b, v)), None)
            field = field_name(blamed) if blamed is not None else f"a value sent to {endpoint(block_fn)}"
            raise gr.Error(f"{field} is not a value of the right kind ({type(exc).__name__})",
                           print_exception=False) from None

    demo.validate_inputs = validate_inputs
    demo.preprocess_data = checked_preprocess_data


def reading_errors_named(block, preprocess):
    """The component's preprocess, its failures as one gr.Error line naming the field (Gradio passes gr.Error on
    unchanged)."""
    def read(payload):
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception as exc:
            raise gr.Error(f"{field_name(block)}: {unreadable(exc)}", print_exception=False) from None

    return read


def fits(block, value) -> bool:
    try:
        block.data_model.model_validate(value, context={"validate_meta": True})
    except Exception:
        return False
    return True


# ---------- handlers bound to an app -----------------------------------------------------------------------------


def keyed_by_component(call, generator: bool, outputs: dict[str, object] | None):
    """An event function around `call`: results that are dicts keyed by output names (streamed when `generator`)
    are handed to Gradio keyed by the components in `outputs`."""
    def keyed(result):
        return {outputs[k]: v for k, v in result.items()} if outputs and isinstance(result, dict) else result

    if generator:
        def wrapper(*args, **kwargs):
            for item in call(*args, **kwargs):
                yield keyed(item)
    else:
        def wrapper(*args, **kwargs):
            return keyed(call(*args, **kwargs))
    return wrapper


def handler(fn, app: App, outputs: dict[str, object] | None = None):
    """`fn(app, ...)` as a Gradio event function: `app` bound, the rest of the signature kept (it names the API's
    parameters). With `outputs` (name -> component), dict results are keyed by component (`keyed_by_component`)."""
    bound = functools.partial(fn, app)
    wrapper = keyed_by_component(bound, inspect.isgeneratorfunction(fn), outputs)
    functools.update_wrapper(wrapper, fn)
    wrapper.__signature__ = inspect.signature(bound)
    return wrapper


# ---------- inputs whose values reach our checks as sent ----------------------------------------------------------


def as_sent(component):
    """The component's value reaches the handler as sent. Gradio's own preprocessing rounds a number to its
    precision (a seed of 1.5 would silently become 2) and refuses text or out-of-range values (API callers bypass
    the page's bounds) with a message of its own that names no field; the handlers' checks (pipelines/checks.py)
    name the field instead. Set on the instance: a subclass would make Gradio write a .pyi beside this file."""
    component.preprocess = lambda payload: payload
    return component


def NumberBox(*args, **kwargs) -> gr.Number:  # noqa: N802  (reads like the component it makes)
    return as_sent(gr.Number(*args, **kwargs))


def SliderBox(*args, **kwargs) -> gr.Slider:  # noqa: N802
    return as_sent(gr.Slider(*args, **kwargs))


# ---------- uploads: files we open ourselves ----------------------------------------------------------------------

# No file_types filter: Gradio would refuse other files with its own message; we read the contents instead.
IMAGE_TYPES = None


class ImageUpload:
    """An image upload as a file (Gradio does not decode it: we do, under our own limits, so a bad file gets our
    one-line message naming the field) and a preview of what was read."""

    def __init__(self, label: str, elem_id: str, height: int = 260):
        self.label = label
        self.file = gr.File(label=label, file_types=IMAGE_TYPES, type="filepath", elem_id=elem_id)
        self.view = gr.Image(label=f"{label} (as read)", type="pil", format="png", interactive=False, height=height,
                             elem_id=f"{elem_id}-view")
        self.file.change(user_errors(f"reading {label}")(self.read), self.file, self.view, **LIGHT_EVENT)

    def read(self, path: str | None):
        return None if path is None else read_upload(path, self.label)


def read_upload(path: str | None, label: str, mode: str = "RGB"):
    """An uploaded file opened under our limits (checks.read_image), named as the page labels it."""
    if path is None:
        return None
    return read_image(path, mode, what=label, name=Path(path).name)


# ---------- per-user state: a folder for the session's LoRA files, and its latest LoRA per tab -------------------


def slug(text: str, n: int = 32) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:n].strip("-") or "lora"


def new_session(app: App, request: gr.Request | None) -> dict:
    key = getattr(request, "session_hash", None) or uuid.uuid4().hex
    folder = app.root / slug(key, 64)
    folder.mkdir(parents=True, exist_ok=True)
    return {"dir": str(folder), "lora": {}, "runs": 0}


def drop_session(session: dict | None) -> None:
    if session:
        shutil.rmtree(session["dir"], ignore_errors=True)
