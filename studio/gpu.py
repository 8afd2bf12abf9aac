"""The models, loaded once per process and shared by every user, and the GPU functions: plain arguments in, plain
results out, each decorated with `spaces.GPU` (a duration computed from its arguments) when the `spaces` package is
importable (Hugging Face ZeroGPU) and unchanged without it. ZeroGPU pickles arguments and results and runs them in a
forked worker, so nothing here keeps per-user state in globals."""

from __future__ import annotations

try:  # ZeroGPU: `spaces` must be imported before anything touches CUDA
    import spaces
except ImportError:
    spaces = None

import os
import threading

from pipelines import judge, refine, self_reward
from pipelines.generator import Generator
from pipelines.loading import default_device, load_generator, load_vlm
from pipelines.presets import Preset
from pipelines.vlm import VLM

from . import questions as question_box
from .runs import gpu_seconds, run

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


# ---------- GPU functions: plain arguments in, plain results out -------------------------------------------------


def on_gpu(duration):
    """spaces.GPU with a duration (seconds, or a function of the call's arguments) when on Spaces."""
    if spaces is None:
        return lambda fn: fn
    size = os.environ.get("ZEROGPU_SIZE")  # "large" (48 GB, default) or "xlarge" (96 GB)
    return spaces.GPU(duration=duration, **({"size": size} if size else {}))


def image_seconds(preset: Preset, *args, **kwargs) -> int:
    return 20 + 2 * preset.inference_steps


def run_seconds(preset: Preset, prompt: str, seed: int, qa_pairs: list, steps: int, *args,
                steering: dict | None = None, **kwargs) -> int:
    return gpu_seconds(preset, steps, len(qa_pairs), steering)


def score_seconds(preset: Preset, prompt: str, images: list, sampled: bool) -> int:
    return 15 + len(images) * (40 if sampled else 10)


def refine_seconds(preset: Preset, prompt: str, n: int, *args, **kwargs) -> int:
    return 20 + (n + 1) * (2 * preset.inference_steps + 10)  # image, scores and a reason each


def pivot_seconds(preset: Preset, prompt: str, n: int, temperature: float, top_p: float, seed: int,
                  pivots: int) -> int:
    return 20 + (n + 1 + pivots) * (2 * preset.inference_steps + 10)


@on_gpu(image_seconds)
def gpu_generate(preset: Preset, prompt: str, seed: int, lora_path: str | None = None, scale: float = 1.0,
                 loras: list[tuple[str, float]] = ()):
    generator, _ = models(preset)
    with MODEL_LOCK:
        return generator.generate(prompt, seed, lora_path=lora_path, scale=scale, loras=loras)


@on_gpu(image_seconds)
def gpu_draft(preset: Preset, prompt: str, n: int) -> tuple[list[str], str]:
    _, vlm = models(preset)
    with MODEL_LOCK:
        return question_box.draft_questions(vlm, prompt, n)


@on_gpu(run_seconds)
def gpu_run(preset: Preset, prompt: str, seed: int, qa_pairs: list, steps: int, out_path: str, overlay=None,
            overlay_description: str = "", controls: list[str] | None = None, init_path: str | None = None,
            stop_file: str | None = None, steering: dict | None = None):
    generator, vlm = models(preset)
    yield from run(generator, vlm, prompt, seed, qa_pairs, steps=steps, out_path=out_path, lock=MODEL_LOCK,
                   overlay=overlay, overlay_description=overlay_description, target_p=generator.preset.target_p,
                   controls=controls, init_path=init_path, stop_file=stop_file, steering=steering)


@on_gpu(score_seconds)
def gpu_score(preset: Preset, prompt: str, images: list, sampled: bool):
    _, vlm = models(preset)
    with MODEL_LOCK:
        reports = [judge.judge(vlm, image, prompt, sampled=sampled) for image in images]
        comparison = judge.compare(vlm, images[0], images[1], prompt) if len(images) == 2 else None
    return reports, comparison


@on_gpu(refine_seconds)
def gpu_refine(preset: Preset, prompt: str, n: int, temperature: float, top_p: float, seed: int,
               vlm_lora: str | None = None):
    generator, vlm = models(preset)
    with MODEL_LOCK:
        return refine.refine(generator, vlm, prompt, n, temperature, top_p, seed=seed, image_seed=seed,
                             vlm_lora=vlm_lora, reasons=True)


@on_gpu(pivot_seconds)
def gpu_refine_pivot(preset: Preset, prompt: str, n: int, temperature: float, top_p: float, seed: int,
                     pivots: int):
    generator, vlm = models(preset)
    with MODEL_LOCK:
        return refine.pivot(generator, vlm, prompt, n, pivots, temperature, top_p, seed=seed, image_seed=seed,
                            reasons=True)


def self_improve_seconds(preset: Preset, prompts: list[str], n: int, *args, **kwargs) -> int:
    per_image = 2 * preset.inference_steps + 10
    return 60 + len(prompts) * ((n + 1) + 2 * SELF_IMPROVE_SAMPLES) * per_image  # pairs, then before and after


SELF_IMPROVE_SAMPLES = 2  # rewrites per prompt behind the page's before/after figures


@on_gpu(self_improve_seconds)
def gpu_self_improve(preset: Preset, prompts: list[str], n: int, out_dir: str):
    generator, vlm = models(preset)
    with MODEL_LOCK:
        return self_reward.self_improve(generator, vlm, prompts, out_dir, n=n, samples=SELF_IMPROVE_SAMPLES,
                                        truth=preset.analytic_scores)


@on_gpu(image_seconds)
def gpu_recreate(preset: Preset, image, seed: int):
    generator, vlm = models(preset)
    with MODEL_LOCK:
        return refine.recreate(generator, vlm, image, seed)
