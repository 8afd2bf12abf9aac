"""The models, loaded once per process and shared by every user, and the GPU functions: plain arguments in, plain
results out, each decorated with `spaces.GPU` (a duration computed from its arguments, on the slice the preset's
memory plan needs) when the `spaces` package is importable (Hugging Face ZeroGPU) and unchanged without it.
ZeroGPU pickles arguments and results and runs them in a forked worker, so nothing here keeps per-user state in
globals."""

from __future__ import annotations

try:  # ZeroGPU: `spaces` must be imported before anything touches CUDA
    import spaces
except ImportError:
    spaces = None

import functools
import json
import os
import threading
import types
from collections.abc import Callable

from pipelines import cost, judge, refine, self_reward
from pipelines.bench import SUITE_PREDICTIONS, SUITE_SIZE
from pipelines.checks import ZEROGPU_COUNTED, ZEROGPU_MAX_SECONDS, ZEROGPU_SLICES_GIB, check_gpu_seconds, on_zerogpu
from pipelines.generator import Generator, family
from pipelines.loading import default_device, load_generator, load_vlm
from pipelines.optimize import EVAL_SEEDS
from pipelines.presets import Preset
from pipelines.steering import step_cost
from pipelines.vlm import VLM

from . import questions as question_box
from .runs import run

# ---------- models: loaded once per process, shared by every user ------------------------------------------------

_MODELS: dict[str, tuple[Generator, VLM]] = {}
_LOAD_LOCK = threading.Lock()
MODEL_LOCK = threading.Lock()  # held while a job uses the shared pipeline (a run's worker holds it throughout)
DEVICES: dict[str, str | None] = {"generator": None, "vlm": None}


def models(preset: Preset) -> tuple[Generator, VLM]:
    """The preset's generator and VLM, loaded on first use and kept for every later call (keyed by its name)."""
    with _LOAD_LOCK:
        if preset.name not in _MODELS:
            gen_device = DEVICES["generator"] or default_device()
            _MODELS[preset.name] = (load_generator(preset, gen_device), load_vlm(preset, DEVICES["vlm"] or gen_device))
        return _MODELS[preset.name]


# ---------- ZeroGPU: the slice, and each call's duration computed from its request -----------------------------
# A GPU function is registered by `on_gpu`; `use_slice` (build_demo, before launch) decorates every one with
# spaces.GPU for the slice the preset's memory plan needs. A call first computes its duration from its arguments
# and refuses, in one line that says how to shorten it, a request ZeroGPU would refuse at its queue.

GPU_FUNCTIONS: dict[str, tuple[Callable, Callable, Callable]] = {}  # name -> (function, seconds, how to shorten)
DECORATED: dict[str, Callable] = {}
SLICE = {"size": "large", "why": "ZeroGPU's default"}


def on_gpu(seconds: Callable[..., float], shorten: Callable[..., str] | str):
    """Register a GPU function: `seconds` and `shorten` take the function's own arguments (the duration to request,
    and what the user can change when it is too long)."""
    def wrap(fn: Callable) -> Callable:
        GPU_FUNCTIONS[fn.__name__] = (fn, seconds, shorten if callable(shorten) else lambda *a, **k: shorten)

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            if spaces is not None and on_zerogpu():  # refused before it queues, not by ZeroGPU after the wait
                check_gpu_seconds(seconds(*args, **kwargs), SLICE["size"], GPU_FUNCTIONS[fn.__name__][2](
                    *args, **kwargs))
            return DECORATED.get(fn.__name__, fn)(*args, **kwargs)

        return checked
    return wrap


def slice_for(preset: Preset) -> tuple[str, str]:
    """("large" | "xlarge", why): the smallest ZeroGPU slice the cost model's predicted peak of the preset's own
    memory plan fits with its headroom (as `cost.CostReport.fits`); $ZEROGPU_SIZE overrides it."""
    chosen = os.environ.get("ZEROGPU_SIZE", "").strip().lower()
    if chosen:
        if chosen not in ZEROGPU_SLICES_GIB:
            raise ValueError(f"ZEROGPU_SIZE {chosen!r} must be one of {', '.join(ZEROGPU_SLICES_GIB)}")
        return chosen, "set by ZEROGPU_SIZE"
    try:
        peak = predicted_peak_gib(preset)
    except ValueError as exc:  # a judge the cost model cannot count: the whole card rather than a failed run
        return "xlarge", f"the cost model cannot size this preset ({exc})"
    for size, gib in ZEROGPU_SLICES_GIB.items():
        if peak + cost.HEADROOM_GIB <= gib:
            return size, f"its plan is predicted to peak at {peak:.1f} GiB, within the {size} slice's {gib:g} GiB"
    return "xlarge", f"its plan is predicted to peak at {peak:.1f} GiB, more than any slice: it may not fit"


def predicted_peak_gib(preset: Preset) -> float:
    """The preset's own plan's predicted peak: read from the GPU suite's predictions when they count this plan
    (counting a Flux plan takes a CPU a minute, at every start of a Space), else counted now (`cost.estimate`)."""
    plan = f"{preset.name} {preset.base_weights} checkpointing {'on' if preset.gradient_checkpointing else 'off'}"
    known = json.loads(SUITE_PREDICTIONS.read_text()) if SUITE_PREDICTIONS.exists() else {}
    if preset.resolution == SUITE_SIZE and plan in known:
        return known[plan]["peak_gib"]
    return cost.estimate(preset).process_peak_bytes / cost.GIB


def use_slice(preset: Preset) -> tuple[str, str]:
    """Decorate every GPU function with spaces.GPU for the preset's slice (where `spaces` is importable; once per
    page, before launch). Returns (size, why)."""
    # Only where a slice is chosen: a plan the GPU suite did not count costs a CPU seconds (a minute for Flux).
    size, why = slice_for(preset) if spaces is not None and on_zerogpu() else ("large", "not on ZeroGPU")
    SLICE.update(size=size, why=why)
    for name, (fn, seconds, _) in GPU_FUNCTIONS.items():
        # A fresh function object per page: spaces.GPU caches by function, and each page may have its own slice.
        task = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
        task.__kwdefaults__ = fn.__kwdefaults__
        DECORATED[name] = task if spaces is None else spaces.GPU(task, duration=seconds, size=size)
    return size, why


SLICE_SPEED = {"large": 1.0, "xlarge": 0.5}  # seconds relative to a large slice: the whole card, twice the SMs


def image_seconds(preset: Preset, *args, **kwargs) -> float:
    """One generation: the family's seconds per optimization step (`generator.Family`, generous, on a large slice)
    stand for three no-gradient passes, at the preset's resolution (the cost grows with the pixels)."""
    return (family(preset.generator).seconds_per_step / 3 * max(1, preset.inference_steps) * area(preset)
            * SLICE_SPEED[SLICE["size"]])


def call_seconds(preset: Preset, *args, **kwargs) -> float:
    """A call that generates one image: the image and 20 s to start."""
    return 20 + image_seconds(preset)


def area(preset: Preset) -> float:
    return (preset.resolution / 512) ** 2


def run_seconds(preset: Preset, prompt: str, seed: int, qa_pairs: list, steps: int, *args,
                steering: dict | None = None, **kwargs) -> float:
    """One optimization run: `steps` steps (`step_seconds`), plus 30 s to start and the images before, after and of
    the unseen seeds at LoRA scale 0 and 1."""
    return run_overhead(preset) + steps * step_seconds(preset, len(qa_pairs), steering)


def run_overhead(preset: Preset) -> float:
    return 30 + (2 + 2 * EVAL_SEEDS) * image_seconds(preset)


def step_seconds(preset: Preset, n_questions: int, steering: dict | None) -> float:
    """One step: the family's estimate at the preset's resolution on this slice, longer with more questions (a
    longer VLM batch) and with steering (`steering.step_cost`)."""
    chosen = {"views": preset.views, "noises": preset.noises, "keep": preset.keep} | (steering or {})
    return (family(preset.generator).seconds_per_step * area(preset) * SLICE_SPEED[SLICE["size"]]
            * (1 + 0.3 * (max(1, n_questions) - 1)) * step_cost(chosen["views"], chosen["noises"], chosen["keep"]))


def run_shorten(preset: Preset, prompt: str, seed: int, qa_pairs: list, steps: int, *args,
                steering: dict | None = None, **kwargs) -> str:
    budget = ZEROGPU_MAX_SECONDS / ZEROGPU_COUNTED[SLICE["size"]] - run_overhead(preset)
    fit = int(budget // step_seconds(preset, len(qa_pairs), steering))
    return (f"use at most {max(0, fit)} steps, fewer questions, or fewer views and noises (Steering); a run can "
            "continue from its LoRA")


def score_seconds(preset: Preset, prompt: str, images: list, sampled: bool) -> float:
    return 15 + len(images) * (40 if sampled else 10) * area(preset) * SLICE_SPEED[SLICE["size"]]


def refine_seconds(preset: Preset, prompt: str, n: int, *args, **kwargs) -> float:
    return 20 + (n + 1) * (image_seconds(preset) + 10)  # an image, its scores and a reason each


def pivot_seconds(preset: Preset, prompt: str, n: int, temperature: float, top_p: float, seed: int,
                  pivots: int) -> float:
    return 20 + (n + 1 + pivots) * (image_seconds(preset) + 10)


@on_gpu(call_seconds, "choose a preset with fewer inference steps")
def gpu_generate(preset: Preset, prompt: str, seed: int, lora_path: str | None = None, scale: float = 1.0,
                 loras: list[tuple[str, float]] = ()):
    generator, _ = models(preset)
    with MODEL_LOCK:
        return generator.generate(prompt, seed, lora_path=lora_path, scale=scale, loras=loras)


@on_gpu(call_seconds, "ask for fewer questions")
def gpu_draft(preset: Preset, prompt: str, n: int) -> tuple[list[str], str]:
    _, vlm = models(preset)
    with MODEL_LOCK:
        return question_box.draft_questions(vlm, prompt, n)


@on_gpu(run_seconds, run_shorten)
def gpu_run(preset: Preset, prompt: str, seed: int, qa_pairs: list, steps: int, out_path: str, overlay=None,
            overlay_description: str = "", controls: list[str] | None = None, init_path: str | None = None,
            stop_file: str | None = None, steering: dict | None = None):
    generator, vlm = models(preset)
    yield from run(generator, vlm, prompt, seed, qa_pairs, steps=steps, out_path=out_path, lock=MODEL_LOCK,
                   overlay=overlay, overlay_description=overlay_description, target_p=generator.preset.target_p,
                   controls=controls, init_path=init_path, stop_file=stop_file, steering=steering)


@on_gpu(score_seconds, "score one image at a time, or without sampled explanations")
def gpu_score(preset: Preset, prompt: str, images: list, sampled: bool):
    _, vlm = models(preset)
    with MODEL_LOCK:
        reports = [judge.judge(vlm, image, prompt, sampled=sampled) for image in images]
        comparison = judge.compare(vlm, images[0], images[1], prompt) if len(images) == 2 else None
    return reports, comparison


@on_gpu(refine_seconds, "ask for fewer candidates")
def gpu_refine(preset: Preset, prompt: str, n: int, temperature: float, top_p: float, seed: int,
               vlm_lora: str | None = None):
    generator, vlm = models(preset)
    with MODEL_LOCK:
        return refine.refine(generator, vlm, prompt, n, temperature, top_p, seed=seed, image_seed=seed,
                             vlm_lora=vlm_lora, reasons=True)


@on_gpu(pivot_seconds, "ask for fewer candidates or pivot images")
def gpu_refine_pivot(preset: Preset, prompt: str, n: int, temperature: float, top_p: float, seed: int,
                     pivots: int):
    generator, vlm = models(preset)
    with MODEL_LOCK:
        return refine.pivot(generator, vlm, prompt, n, pivots, temperature, top_p, seed=seed, image_seed=seed,
                            reasons=True)


def self_improve_seconds(preset: Preset, prompts: list[str], n: int, *args, **kwargs) -> float:
    per_image = image_seconds(preset) + 10
    return 60 + len(prompts) * ((n + 1) + 2 * SELF_IMPROVE_SAMPLES) * per_image  # pairs, then before and after


SELF_IMPROVE_SAMPLES = 2  # rewrites per prompt behind the page's before/after figures


@on_gpu(self_improve_seconds, "use fewer prompts or candidates")
def gpu_self_improve(preset: Preset, prompts: list[str], n: int, out_dir: str):
    generator, vlm = models(preset)
    with MODEL_LOCK:
        return self_reward.self_improve(generator, vlm, prompts, out_dir, n=n, samples=SELF_IMPROVE_SAMPLES,
                                        truth=preset.analytic_scores)


@on_gpu(call_seconds, "choose a preset with fewer inference steps")
def gpu_recreate(preset: Preset, image, seed: int):
    generator, vlm = models(preset)
    with MODEL_LOCK:
        return refine.recreate(generator, vlm, image, seed)
