"""`python -m pipelines.optimize`: the command line of `pipelines/optimize.py` (usage: its docstring)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from tqdm.auto import tqdm

from overlays import CONTROLS
from overlays.base import QA, pair

from .. import lora, steering
from ..checks import (
    MAX_ANSWER_CHARS,
    MAX_EVAL_SEEDS,
    check_compile,
    check_keep,
    check_noises,
    check_output,
    check_prompt,
    check_renoise,
    check_seed,
    check_steps,
    check_text,
    check_views,
)
from ..optimize import (
    EVAL_SEEDS,
    TARGET_WINDOW,
    Step,
    lora_settings,
    normalise_answer,
    optimize,
    parse_target_p,
    save_result,
    sidecar_path,
    stop_on_interrupt,
    with_prompt_guard,
    with_yes_no,
)
from . import cli


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("Train a LoRA of the generator from a VLM's Yes/No answers.")
    cli.add_model_args(parser)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--question", action="append",
                        help="a Yes/No question (repeatable); 'Answer with Yes or No.' is appended")
    parser.add_argument("--answer", action="append", help="expected answer per question (default Yes)")
    parser.add_argument("--overlay", help="raw RGBA image composited over the generated image before the VLM")
    cli.add_control_args(parser)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--rank", type=int)
    parser.add_argument("--alpha", type=float, help="LoRA alpha (default 5 x rank, the paper's; the official code's "
                                                    "runs are alpha = 2.5 x rank)")
    parser.add_argument("--renoise", help="one-step models: re-noise the generated image to a sigma drawn from LO,HI "
                                          "(default: train at sigma = 1 on the initial noise, as inference runs)")
    parser.add_argument("--target-p", help="stop early once the mean P(expected answers) of the last "
                                           f"{TARGET_WINDOW} steps reaches this; 'off' runs every step "
                                           "(default: the preset's)")
    parser.add_argument("--keep-prompt", action=argparse.BooleanOptionalAction,
                        help="also ask 'Does this image show {prompt}?' (expected Yes): a guard against drift "
                             "(default: the preset's; on for toy, off for the real presets, as in the paper)")
    parser.add_argument("--eval-seeds", type=int, default=EVAL_SEEDS,
                        help="unseen seeds judged at LoRA scale 0 and 1 at the end (0: none)")
    parser.add_argument("--seed", type=int, help="seeds the LoRA and every step's noise (default 0; with "
                                                 "--init-lora, the parent's seed)")
    parser.add_argument("--init-lora", help="continue training from this LoRA file (same preset, rank and targets); "
                                            "the noise seeds go on from its step count, AdamW starts afresh")
    parser.add_argument("--checkpointing", choices=["preset", "on", "off"], default="preset",
                        help="gradient checkpointing: less memory, about a third more time per step")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the transformer for the gradient step (off by default; refused on ZeroGPU)")
    parser.add_argument("--views", type=int,
                        help="the judge sees this many random views (shifted, zoomed, blurred) of each image and the "
                             "loss averages them: gradients that survive views are less adversarial (0: off; "
                             "default: the preset's)")
    parser.add_argument("--noises", type=int, help="initial noises per step, the LoRA must work for all (default: "
                                                   "the preset's)")
    parser.add_argument("--keep", type=float,
                        help="weight of a term holding colours and texture to the base model's picture (0: off; "
                             "default: the preset's)")
    parser.add_argument("--out", required=True, help="LoRA file to write (.safetensors)")
    return parser


def asked(args: argparse.Namespace, prompt: str, resolution: int,
          keep_prompt: bool = False) -> tuple[list[QA], object, list[str]]:
    """The (question, expected answer) pairs, the overlay (None, an RGBA array) and one line per control, from
    --question/--answer, --control and its flags, or --overlay; `keep_prompt` adds the prompt guard."""
    if args.control and args.overlay:
        raise ValueError("give either --control or --overlay, not both")
    if not args.control and not args.question:
        raise ValueError("give at least one --question (or a --control, which brings its own)")
    asks_own = [c for c in (CONTROLS[name] for name in args.control or []) if c.uses_questions]
    own = [] if asks_own else args.question or []  # e.g. composition asks the --question values itself
    if args.answer and asks_own:
        raise ValueError(f"--answer does not apply to --control {asks_own[0].name}: its questions expect Yes")
    answers = [normalise_answer(check_text(a, "expected answer", MAX_ANSWER_CHARS))
               for a in args.answer or ["Yes"] * len(own)]
    if len(answers) != len(own):
        raise ValueError(f"{len(answers)} --answer values for {len(own)} --question values")
    qa_pairs = list(zip([with_yes_no(check_text(q, "question")) for q in own], answers, strict=True))
    overlay, controls = None, []
    if args.overlay:
        overlay, controls = cli.read_overlay(args.overlay, resolution), [f"file {args.overlay}"]
    if args.control:
        overlay, control_qa, controls = cli.control_from_args(args, resolution)
        qa_pairs = control_qa + [qa for qa in qa_pairs if qa not in control_qa]
    if keep_prompt:
        qa_pairs = with_prompt_guard(qa_pairs, prompt)
    return qa_pairs, overlay, controls


def report(step: Step) -> None:
    tqdm.write(f"step {step.step:4d}  loss {step.loss:.4f}  P {step.p:.3f}  {step.elapsed:.1f}s")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with cli.errors_as_messages():
        preset = cli.preset_from_args(args)
        steps = check_steps(preset.steps if args.steps is None else args.steps)
        lora_settings(preset, args.rank, args.alpha, args.lr)  # bad numbers fail before any model loads
        if args.renoise:
            preset = dataclasses.replace(preset, renoise=check_renoise(pair(args.renoise, "--renoise")))
        target_p = parse_target_p(args.target_p, preset)
        check_compile(args.compile)
        if args.seed is not None:
            check_seed(args.seed)
        views = check_views(preset.views if args.views is None else args.views)
        noises = check_noises(preset.noises if args.noises is None else args.noises)
        keep = check_keep(preset.keep if args.keep is None else args.keep)
        if args.init_lora:
            lora.check_lora_file(args.init_lora)
        if not 0 <= args.eval_seeds <= MAX_EVAL_SEEDS:
            raise ValueError(f"--eval-seeds {args.eval_seeds} must be from 0 to {MAX_EVAL_SEEDS}")
        prompt = check_prompt(args.prompt)
        keep_prompt = preset.keep_prompt if args.keep_prompt is None else args.keep_prompt
        qa_pairs, overlay, controls = asked(args, prompt, preset.resolution, keep_prompt)
        check_output(args.out, (".safetensors",))
        generator, vlm = cli.load_models(args, preset)
        init = lora.read_parent(args.init_lora, generator.transformer, preset.name) if args.init_lora else None
        seed = args.seed if args.seed is not None else (init.seed if init and init.seed is not None else 0)
        with stop_on_interrupt() as stop:
            result = optimize(generator, vlm, prompt, qa_pairs, overlay=overlay, steps=steps, lr=args.lr,
                              rank=args.rank, alpha=args.alpha, seed=seed, callback=report, init=init,
                              eval_seeds=args.eval_seeds, target_p=target_p, compile=args.compile, finish_now=stop,
                              views=views, noises=noises, keep=keep,
                              hold=steering.held(CONTROLS[name].changes for name in args.control or []),
                              gradient_checkpointing={"preset": None, "on": True, "off": False}[args.checkpointing])
        if not result.history:
            raise ValueError("stopped before the first step: nothing was trained and no LoRA was saved")
        if result.stopped_at is not None:
            print(f"stopped at step {result.stopped_at} of {steps}: the LoRA so far is saved")
        save_result(result, args.out, generator, prompt, qa_pairs, "; ".join(controls), controls, seed)
        if result.reached_target:
            print(f"stopped early at step {len(result.history)}: the mean P of the last {TARGET_WINDOW} steps "
                  f"reached {target_p:g}")
        print(result.unseen.line())
        total = f", {result.total_steps} in all with {init.name}" if init else ""
        print(f"saved {args.out} and {sidecar_path(args.out)} ({len(result.history)} steps{total}, "
              f"final loss {result.history[-1].loss:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
