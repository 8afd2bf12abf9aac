"""`python -m pipelines.evaluate`: the command line of `pipelines/evaluate.py` (usage: its docstring)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from PIL import Image

from overlays import palette

from ..checks import check_output_dir, check_prompt
from ..evaluate import (
    LINES,
    PALETTES,
    PAPER_PROMPTS,
    SEEDS,
    TOY_PROMPTS,
    VARIANTS,
    Measured,
    contact_sheet,
    drawn,
    load_estimator,
    markdown,
    measure,
    plan,
    summarise,
)
from ..files import replacing, write_text
from ..optimize import check_steps, parse_target_p
from ..presets import Preset
from . import cli
from . import evaluate_prompts as prompt_commands


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("Evaluate the method with an independent measure (horizon: the paper's Table 6 protocol).")
    parser.add_argument("task", choices=["horizon", "palette"],
                        help="also refine, pivot, recreate, dpo: the prompt half (see pipelines/evaluate_prompts.py)")
    cli.add_model_args(parser)
    parser.add_argument("--prompts", help="prompts separated by ';' (default: three of the toy world's, or the "
                                          "paper's three on a real preset)")
    parser.add_argument("--lines", type=int, default=len(LINES), help="horizon: lines evenly spaced 0.2..0.8")
    parser.add_argument("--palettes", default=",".join(PALETTES), help="palette: presets separated by ','")
    parser.add_argument("--seeds", type=int, default=SEEDS, help="unseen seeds per LoRA")
    parser.add_argument("--steps", type=int, help="optimization steps per LoRA (default: the preset's)")
    parser.add_argument("--target-p", help="early stopping (default: the preset's; 'off' runs every step)")
    parser.add_argument("--keep-prompt", action="store_true",
                        help="also run every LoRA with the prompt's own question as a guard (a third row)")
    parser.add_argument("--variants", help="rows to run, separated by ',': " + ", ".join(VARIANTS)
                                           + " (default: method, and keep-prompt with --keep-prompt)")
    parser.add_argument("--budget", type=float, help="seconds of training per LoRA (equal wall-clock for every "
                                                     "variant; --steps then caps the steps)")
    parser.add_argument("--draw", type=int, help="draw the lines, the prompts (of a preset that knows its scenes) and "
                                                 "the seeds at random from this seed")
    parser.add_argument("--estimator", default="analytic", help="horizon estimator: analytic or module:function")
    parser.add_argument("--threads", type=int, help="torch threads per process (default: cores / processes)")
    parser.add_argument("--out-dir", required=True, help="folder for results.json, table.md and contact-sheet.png")
    return parser


def what_to_run(args: argparse.Namespace, preset: Preset) -> tuple[list[str], list[float | str], int]:
    """The prompts, the targets (horizon lines or palette names) and the first unseen seed, from the flags (drawn
    at random with --draw)."""
    if not 1 <= args.seeds <= 64 or not 1 <= args.lines <= 20:
        raise ValueError(f"--seeds {args.seeds} must be 1..64 and --lines {args.lines} 1..20")
    default_prompts = TOY_PROMPTS if preset.known_scenes else PAPER_PROMPTS
    prompts = [check_prompt(p) for p in args.prompts.split(";")] if args.prompts else list(default_prompts)
    first_seed = 0
    if args.draw is not None:
        if args.draw < 0:
            raise ValueError(f"--draw {args.draw} must be >= 0")
        lines, scenes, first_seed = drawn(args.draw, args.lines, preset.known_scenes or default_prompts)
        prompts = prompts if args.prompts else scenes
    if args.task == "horizon":
        return prompts, (list(lines) if args.draw is not None else
                         [round(float(x), 3) for x in np.linspace(0.2, 0.8, args.lines)]), first_seed
    names = [" ".join(name.split()).lower() for name in args.palettes.split(",")]
    for name in names:
        palette.Spec.from_preset(name)  # an unknown name fails here, listing the presets
    return prompts, list(names), first_seed


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in prompt_commands.TASKS:  # the prompt half: its own protocols and options
        return prompt_commands.main(words)
    args = build_parser().parse_args(argv)
    with cli.errors_as_messages():
        preset = cli.preset_from_args(args)
        steps = check_steps(preset.steps if args.steps is None else args.steps)
        target_p = parse_target_p(args.target_p, preset)
        estimator = load_estimator(args.estimator)
        prompts, targets, first_seed = what_to_run(args, preset)
        out_dir = check_output_dir(args.out_dir)
        state = PartialState(cpu=not torch.cuda.is_available())  # no GPU: CPU processes over gloo
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // state.num_processes))
        variants = ([v.strip() for v in args.variants.split(",")] if args.variants
                    else ["method", "keep-prompt"] if args.keep_prompt else ["method"])
        if args.budget is not None and not 0 < args.budget <= 3600:
            raise ValueError(f"--budget {args.budget} must be from 0 to 3600 seconds")
        runs = plan(args.task, prompts, targets, variants, first_seed)
        args.gen_device = args.gen_device or str(state.device)  # one device per process where there are several
        generator, vlm = cli.load_models(args, preset)
        mine: list[tuple[Measured, tuple[Image.Image, Image.Image]]] = []
        with state.split_between_processes(runs) as shard:
            for run in shard:
                mine.append(measure(run, generator, vlm, estimator, steps=steps, seeds=args.seeds, target_p=target_p,
                                    budget=args.budget))
                m = mine[-1][0]
                print(f"[{state.process_index}] run {run.index} {run.variant} {run.prompt!r} {run.target}: distance "
                      f"{np.mean(m.distance_before):.3f} -> {np.mean(m.distance_after):.3f}, P "
                      f"{np.mean(m.p_before):.2f} -> {np.mean(m.p_after):.2f} ({m.steps} steps)", flush=True)
        gathered = gather_object(mine) if state.num_processes > 1 else mine
        if state.is_main_process:
            settings = {"preset": preset.name, "steps": steps, "target_p": target_p, "seeds": args.seeds,
                        "draw": args.draw, "budget_s": args.budget, "variants": {v: VARIANTS[v] for v in variants},
                        "estimator": args.estimator, "processes": state.num_processes,
                        "command": "python -m pipelines.evaluate " + " ".join(words)}
            write_outputs(out_dir, args.task, sorted(gathered, key=lambda item: item[0].run.index), args.budget,
                          settings)
        state.wait_for_everyone()
    return 0


def write_outputs(out_dir: Path, task: str, gathered: list[tuple[Measured, tuple[Image.Image, Image.Image]]],
                  budget: float | None, settings: dict[str, object]) -> None:
    """results.json (the summary, the settings and every run), table.md and contact-sheet.png; the table printed."""
    measured = [m for m, _ in gathered]
    summary = summarise(task, measured, budget)
    record = summary | settings | {"runs": [asdict(m) | {"kept_scene": m.kept_scene} for m in measured]}
    write_text(out_dir / "results.json", json.dumps(record, indent=1) + "\n")
    table = markdown(summary)
    write_text(out_dir / "table.md", table)
    with replacing(out_dir / "contact-sheet.png") as tmp:
        contact_sheet(task, measured, [pair for _, pair in gathered]).save(tmp, format="PNG")
    print(table)
    print(f"wrote {out_dir / 'results.json'}, table.md and contact-sheet.png")


if __name__ == "__main__":
    sys.exit(main())
