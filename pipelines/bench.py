"""Seconds per optimization step, seconds per generation, peak memory, for a preset and resolution.

    python -m pipelines.bench --preset tiny
    python -m pipelines.bench --preset flux-schnell --random-weights --size 512    # on a GPU, no download

`--random-weights` builds the preset's full-size architectures from configs in `random_models.py`:
time and memory do not depend on the weights' values.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import resource
import statistics
import sys
import time

import torch

from . import cli
from .checks import check_renoise
from .optimize import Step, optimize

QUESTION = [("Is the horizon of the scene aligned with the red line? Answer with Yes or No.", "Yes")]


def peak_memory_gb() -> dict[str, float]:
    if torch.cuda.is_available():
        return {"gpu_allocated_gb": torch.cuda.max_memory_allocated() / 2**30,
                "gpu_reserved_gb": torch.cuda.max_memory_reserved() / 2**30}
    # ru_maxrss is in KiB on Linux: the process's peak resident memory.
    return {"cpu_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__.splitlines()[0])
    cli.add_model_args(parser)
    parser.add_argument("--size", type=int, help="image side (default: the preset's resolution)")
    parser.add_argument("--steps", type=int, default=5, help="timed optimization steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--generations", type=int, default=3, help="timed generations")
    parser.add_argument("--random-weights", action="store_true", help="full-size architectures, random weights")
    parser.add_argument("--checkpointing", choices=["preset", "on", "off"], default="preset",
                        help="gradient checkpointing of the transformer and VAE decoder (default: the preset's)")
    parser.add_argument("--renoise", help="one-step models: re-noise to a sigma in LO,HI (the old default 0.3,1.0)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    with cli.errors_as_messages():
        preset = cli.preset_from_args(args)
        for flag in ("steps", "generations"):
            if getattr(args, flag) < 1:
                raise ValueError(f"--{flag} {getattr(args, flag)} must be at least 1")
        if args.warmup < 0:
            raise ValueError(f"--warmup {args.warmup} must not be negative")
        if args.random_weights and not preset.generator_source.startswith("random:"):
            preset = preset.with_sources("random:full", "random:full")
        if args.size:
            preset = dataclasses.replace(preset, resolution=args.size)
        if args.renoise:
            preset = dataclasses.replace(preset, renoise=check_renoise(cli.pair(args.renoise, "--renoise")))
        t0 = time.perf_counter()
        generator, vlm = cli.load_models(args, preset)
        sync()
        load_s = time.perf_counter() - t0
        cond = generator.encode("a tropical beach at sunset")
        generator.text_encoders_to("cpu")

        gen_times = []
        for i in range(args.generations + 1):  # the first call warms up kernels and caches
            sync()
            t = time.perf_counter()
            generator.generate(cond, seed=i)
            sync()
            gen_times.append(time.perf_counter() - t)

        marks: list[float] = []

        def mark(step: Step) -> None:
            sync()
            marks.append(time.perf_counter())

        sync()
        start = time.perf_counter()
        checkpointing = {"preset": None, "on": True, "off": False}[args.checkpointing]
        optimize(generator, vlm, cond, QUESTION, steps=args.warmup + args.steps, callback=mark, progress=False,
                 gradient_checkpointing=checkpointing, eval_seeds=0)
        step_times = [b - a for a, b in zip([start] + marks[:-1], marks, strict=False)][args.warmup:]
        s_per_step = statistics.median(step_times)
        result = {
            "preset": preset.name, "size": preset.resolution, "random_weights": args.random_weights,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
            "torch": torch.__version__, "dtype": str(generator.transformer.dtype),
            "gradient_checkpointing": preset.gradient_checkpointing if checkpointing is None else checkpointing,
            "renoise": preset.renoise,
            "load_s": round(load_s, 2),
            "s_per_step_median": round(s_per_step, 4), "s_per_100_steps": round(100 * s_per_step, 2),
            "s_per_generation_median": round(statistics.median(gen_times[1:]), 4),
            "timed_steps": len(step_times), "timed_generations": len(gen_times) - 1,
            **{k: round(v, 2) for k, v in peak_memory_gb().items()},
        }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
