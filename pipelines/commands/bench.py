"""`python -m pipelines.bench`: the command line of `pipelines/bench.py` (usage: its docstring)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import statistics
import sys
import time

import torch

from overlays.base import pair

from .. import cost
from ..bench import QUESTION, peak_memory_gb, sync
from ..checks import (
    check_compile,
    check_generate_size,
    check_keep,
    check_noises,
    check_output,
    check_renoise,
    check_views,
)
from ..files import write_text
from ..optimize import Step, optimize, with_prompt_guard
from ..presets import Preset
from . import bench_suite, cli

PROMPT = "a tropical beach at sunset"


def add_cost_args(parser: argparse.ArgumentParser) -> None:
    """--cost and its options (the memory plan's --text-encoders and --base-weights come with the model
    arguments, `cli.add_model_args`)."""
    parser.add_argument("--cost", action="store_true",
                        help="count one optimisation step on the meta device (no weights, no GPU, a CPU and "
                             "seconds): FLOPs, time floor, saved activations, predicted peak GPU memory")
    parser.add_argument("--memory-plans", action="store_true",
                        help="with --cost: the predicted peak of every plan (checkpointing on/off x text encoders "
                             "gpu/offload x base weights bf16/int8) as a markdown table")
    parser.add_argument("--peak-tflops", type=float, default=cost.DEFAULT_PEAK_TFLOPS,
                        help="with --cost: the matmul rate of the time floor, TFLOP/s (default: an H200's bf16)")
    parser.add_argument("--quantize-vlm", action="store_true",
                        help="with --cost and int8/fp8 base weights: quantise the VLM's nn.Linear weights too")


def cost_main(args: argparse.Namespace) -> int:
    """`bench --cost`: the cost report (or with --memory-plans the plans' table) of the preset at --size."""
    with cli.errors_as_messages():
        if not args.cost:
            raise ValueError("--memory-plans needs --cost")
        preset = cli.preset_from_args(args)
        if not (args.peak_tflops > 0 and math.isfinite(args.peak_tflops)):
            raise ValueError(f"--peak-tflops {args.peak_tflops:g} must be a positive number")
        if args.size is not None:
            check_generate_size(args.size, "--size")
        if args.json and args.json != "-":
            check_output(args.json, (".json",), "--json")
        checkpointing = {"preset": None, "on": True, "off": False}[args.checkpointing]
        # `preset_from_args` put --text-encoders / --base-weights into the preset: its plan is the one to cost.
        if args.memory_plans:
            reports = cost.memory_plans(preset, args.size, quantize_vlm=args.quantize_vlm,
                                        peak_tflops=args.peak_tflops)
            text = "PREDICTIONS (counted on the meta device; nothing ran on a GPU)\n" + cost.plans_table(reports)
            data: object = [r.as_dict() for r in reports]
        else:
            report = cost.estimate(preset, args.size, checkpointing, quantize_vlm=args.quantize_vlm,
                                   peak_tflops=args.peak_tflops)
            text, data = report.text(), report.as_dict()
        if args.json == "-":
            print(json.dumps(data, indent=1))
        else:
            print(text)
            if args.json:
                write_text(args.json, json.dumps(data, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(__doc__.splitlines()[0])
    cli.add_model_args(parser)
    parser.add_argument("--size", type=int, help="image side (default: the preset's resolution)")
    parser.add_argument("--steps", type=int, default=5, help="timed optimization steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--generations", type=int, default=3, help="timed generations")
    parser.add_argument("--random-weights", action="store_true", help="full-size architectures, random weights")
    parser.add_argument("--checkpointing", choices=["preset", "on", "off"], default="preset",
                        help="gradient checkpointing of the transformer and VAE decoder (default: the preset's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the gradient step's transformer "
                                                               "(the warm-up steps absorb the compile)")
    parser.add_argument("--renoise", help="one-step models: re-noise to a sigma in LO,HI (the old default 0.3,1.0)")
    parser.add_argument("--predict", action="store_true",
                        help="also give the cost model's prediction for the same plan beside the measured figures")
    parser.add_argument("--json", help="also write the figures to this file ('-' with --cost: print JSON instead)")
    parser.add_argument("--suite", choices=["gpu"], help="the GPU benchmark (its options: --suite gpu --help)")
    # Steering (`steering.py`): time a step with the options a run would use (default: the preset's)
    parser.add_argument("--views", type=int, help="judged views per image (default: the preset's)")
    parser.add_argument("--noises", type=int, help="initial noises per step (default: the preset's)")
    parser.add_argument("--keep", type=float, help="preservation term's weight, 0 for off (default: the preset's)")
    parser.add_argument("--keep-prompt", action=argparse.BooleanOptionalAction,
                        help="also ask the prompt's own question, one more VLM row per view (default: the preset's)")
    add_cost_args(parser)
    return parser


def checked_preset(args: argparse.Namespace) -> Preset:
    """The preset with the flags' plan, every number checked before a model loads."""
    preset = cli.preset_from_args(args)
    for flag in ("steps", "generations"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} {getattr(args, flag)} must be at least 1")
    if args.warmup < 0:
        raise ValueError(f"--warmup {args.warmup} must not be negative")
    if args.random_weights and not preset.generator_source.startswith("random:"):
        preset = preset.with_sources("random:full", "random:full")
    if args.size is not None:
        preset = dataclasses.replace(preset, resolution=check_generate_size(args.size, "--size"))
    if args.json:
        check_output(args.json, (".json",), "--json")
    if args.renoise:
        preset = dataclasses.replace(preset, renoise=check_renoise(pair(args.renoise, "--renoise")))
    check_compile(args.compile)
    steering = dict(views=check_views(preset.views if args.views is None else args.views),
                    noises=check_noises(preset.noises if args.noises is None else args.noises),
                    keep=check_keep(preset.keep if args.keep is None else args.keep),
                    keep_prompt=preset.keep_prompt if args.keep_prompt is None else args.keep_prompt)
    return dataclasses.replace(preset, **steering)


def timed(args: argparse.Namespace, preset: Preset) -> dict[str, object]:
    """Load the models, time generations and optimization steps (medians after warm-up), read the peak memory."""
    t0 = time.perf_counter()
    generator, vlm = cli.load_models(args, preset)
    sync()
    load_s = time.perf_counter() - t0
    cond = generator.encode(PROMPT)
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
    questions = with_prompt_guard(QUESTION, PROMPT) if preset.keep_prompt else QUESTION
    optimize(generator, vlm, cond, questions, steps=args.warmup + args.steps, callback=mark, progress=False,
             gradient_checkpointing=checkpointing, eval_seeds=0, compile=args.compile, views=preset.views,
             noises=preset.noises, keep=preset.keep)
    step_times = [b - a for a, b in zip([start] + marks[:-1], marks, strict=False)][args.warmup:]
    s_per_step = statistics.median(step_times)
    return {
        "preset": preset.name, "size": preset.resolution, "random_weights": args.random_weights,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "torch": torch.__version__, "dtype": str(generator.transformer.dtype),
        "gradient_checkpointing": preset.gradient_checkpointing if checkpointing is None else checkpointing,
        "renoise": preset.renoise, "compile": args.compile, "base_weights": preset.base_weights,
        "text_encoders": "offload" if preset.offload_text_encoders else "gpu",
        "views": preset.views, "noises": preset.noises, "keep": preset.keep, "keep_prompt": preset.keep_prompt,
        "load_s": round(load_s, 2),
        "s_per_step_median": round(s_per_step, 4), "s_per_100_steps": round(100 * s_per_step, 2),
        "s_per_generation_median": round(statistics.median(gen_times[1:]), 4),
        "timed_steps": len(step_times), "timed_generations": len(gen_times) - 1,
        **{k: round(v, 2) for k, v in peak_memory_gb().items()},
    }


def predicted(preset: Preset, checkpointing: bool) -> dict[str, float]:
    """The cost model's figures for the same preset, size and plan (`pipelines.cost`; a prediction); the time floor
    grows with the steering the step runs (`CostReport.steering_flops`)."""
    report = cost.estimate(preset, preset.resolution, checkpointing)
    steered = report.steering_flops(preset.views, preset.noises, preset.keep, 2 if preset.keep_prompt else 1)
    return {"peak_gib": round(report.process_peak_bytes / cost.GIB, 2),
            "step_peak_gib": round(report.peak_bytes / cost.GIB, 2),
            "floor_s_per_step": round(report.floor_s / report.steps * steered / report.flops_per_step, 4),
            "peak_tflops": report.peak_tflops}


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if "--suite" in words or "--download-wheels" in words:  # the GPU suite: its own flags (bench_suite.py)
        return bench_suite.main(words)
    args = build_parser().parse_args(words)
    if args.cost or args.memory_plans:
        return cost_main(args)
    with cli.errors_as_messages():
        preset = checked_preset(args)
        result = timed(args, preset)
        if args.predict:
            result["predicted"] = predicted(preset, result["gradient_checkpointing"])
        print(json.dumps(result, indent=1))
        if args.json:
            write_text(args.json, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
