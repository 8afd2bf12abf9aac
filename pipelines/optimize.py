"""The dual-process loop: a VLM's Yes/No answer trains a LoRA of the image generator.

    python -m pipelines.optimize --preset tiny --prompt "a tropical beach" \
        --question "Is the horizon aligned with the red line?" --overlay horizon.png --steps 20 --out beach.safetensors
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from overlays import composite
from overlays._common import with_suffix

from . import cli, lora
from .generator import Conditioning, Generator
from .vlm import QA, VLM, to_pil


@dataclass
class Step:
    step: int  # 1-based
    loss: float
    p_yes: float  # exp(-loss): P(expected answers)
    elapsed: float  # seconds since the start of the loop
    preview: Image.Image | None = None  # the clean estimate the VLM judged, every `preview_every` steps


@dataclass
class Result:
    state_dict: dict[str, torch.Tensor]
    rank: int
    alpha: float
    history: list[Step] = field(default_factory=list)
    cancelled: bool = False


def with_yes_no(question: str) -> str:
    """The question ending in "Answer with Yes or No.", as the overlays write theirs."""
    return with_suffix(question)


def normalise_answer(answer: str) -> str:
    """'yes' / 'NO ' -> 'Yes' / 'No': the token the question asks for ("Answer with Yes or No.")."""
    answer = answer.strip()
    return answer.capitalize() if answer.lower() in ("yes", "no") else answer


def lora_settings(preset, rank: int | None, alpha: float | None, lr: float | None) -> tuple[int, float, float]:
    """Rank, alpha and learning rate: the preset's unless given; alpha = 5 x rank when the rank changes."""
    rank = preset.lora_rank if rank is None else rank
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= 512:
        raise ValueError(f"LoRA rank {rank!r} must be an integer from 1 to 512")
    if alpha is None:
        alpha = preset.alpha if rank == preset.lora_rank else 5.0 * rank
    lr = preset.learning_rate if lr is None else lr
    if not 0 < alpha or not 0 < lr < 1:
        raise ValueError(f"LoRA alpha {alpha} must be positive and learning rate {lr} in (0, 1)")
    return rank, float(alpha), float(lr)


def judged_pixels(generator: Generator, cond: Conditioning, seed: int, overlay: np.ndarray | None) -> torch.Tensor:
    """One training sample: x_t (no grad) -> ONE transformer step -> x0_hat -> pixels -> overlay."""
    x_t, sigma = generator.noisy_latents(cond, seed)
    v = generator.velocity(x_t, sigma, cond)
    pixels = generator.decode(x_t - sigma * v)
    # Clamp for the VLM, but let the gradient through saturated pixels (a plain clamp zeroes it there).
    pixels = pixels + (pixels.clamp(0, 1) - pixels).detach()
    return pixels if overlay is None else composite(pixels, overlay)


def optimize(generator: Generator, vlm: VLM, prompt: str | Conditioning, qa_pairs: list[QA], *,
             overlay: np.ndarray | None = None, steps: int = 100, lr: float | None = None,
             rank: int | None = None, alpha: float | None = None, seed: int = 0, preview_every: int = 0,
             callback: Callable[[Step], None] | None = None, should_stop: Callable[[], bool] = lambda: False,
             progress: bool = True, gradient_checkpointing: bool | None = None) -> Result:
    """Train a LoRA so that the VLM answers `qa_pairs` as expected on the generator's images.

    The shared pipeline is left as it was: the adapter is removed at the end, on cancel and on error.
    """
    rank, alpha, lr = lora_settings(generator.preset, rank, alpha, lr)
    check_steps(steps)
    cond = generator.encode(prompt) if isinstance(prompt, str) else prompt
    torch.manual_seed(seed)  # peft draws the LoRA's initial weights from the global generator
    if gradient_checkpointing is None:
        gradient_checkpointing = generator.preset.gradient_checkpointing
    try:
        generator.checkpointing(gradient_checkpointing)
        params = lora.add_lora(generator.transformer, rank, alpha, generator.preset.lora_targets)
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        result, start = Result({}, rank, alpha), time.perf_counter()
        for step in tqdm(range(1, steps + 1), desc="optimising", disable=not progress):
            if should_stop():
                result.cancelled = True
                break
            pixels = judged_pixels(generator, cond, seed * 100_003 + step, overlay)  # a fresh noise seed per step
            nll = vlm.answer_nll(pixels.to(vlm.device), qa_pairs)  # one value per (question, answer)
            loss = nll.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            info = Step(step, loss.item(), vlm.probability(nll), time.perf_counter() - start)
            if preview_every and (step % preview_every == 0 or step == steps):
                info.preview = to_pil(pixels)
            result.history.append(info)
            if callback:
                callback(info)
        result.state_dict = lora.lora_state_dict(generator.transformer)
        return result
    finally:
        lora.remove_all_lora(generator.transformer)
        generator.checkpointing(False)


@torch.no_grad()
def held_out_loss(generator: Generator, vlm: VLM, cond: Conditioning, qa_pairs: list[QA],
                  seeds: list[int], overlay: np.ndarray | None = None) -> float:
    """The training objective on fixed noise seeds never used in training: a steadier signal than
    the per-step loss."""
    losses = [vlm.answer_nll(judged_pixels(generator, cond, s, overlay).to(vlm.device), qa_pairs).mean().item()
              for s in seeds]
    return float(np.mean(losses))


def check_steps(steps: int) -> int:
    if not 1 <= steps <= 10_000:
        raise ValueError(f"steps {steps} must be between 1 and 10000")
    return steps


def save_result(result: Result, path: str, generator: Generator, prompt: str, qa_pairs: list[QA],
                overlay_description: str = "") -> None:
    rank, alpha = result.rank, result.alpha
    lora.save_lora(path, result.state_dict, type(generator.pipe), rank, alpha, generator.preset.lora_targets, {
        "prompt": prompt, "questions": [list(qa) for qa in qa_pairs], "preset": generator.preset.name,
        "rank": rank, "alpha": alpha, "steps": len(result.history), "overlay": overlay_description,
        "final_loss": result.history[-1].loss if result.history else None,
    })


def main(argv: list[str] | None = None) -> int:
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpointing", choices=["preset", "on", "off"], default="preset",
                        help="gradient checkpointing: less memory, about a third more time per step")
    parser.add_argument("--out", required=True, help="LoRA file to write (.safetensors)")
    args = parser.parse_args(argv)
    with cli.errors_as_messages():
        preset = cli.preset_from_args(args)
        steps = check_steps(preset.steps if args.steps is None else args.steps)
        lora_settings(preset, args.rank, None, args.lr)  # bad numbers fail before any model loads
        prompt = cli.check_prompt(args.prompt)
        if args.control and args.overlay:
            raise ValueError("give either --control or --overlay, not both")
        if not args.control and not args.question:
            raise ValueError("give at least one --question (or a --control, which brings its own)")
        own = args.question if args.control != "composition" else []  # composition's questions are its own
        if args.answer and args.control == "composition":
            raise ValueError("--answer does not apply to --control composition: its questions expect Yes")
        answers = [normalise_answer(a) for a in args.answer or ["Yes"] * len(own or [])]
        if len(answers) != len(own or []):
            raise ValueError(f"{len(answers)} --answer values for {len(own or [])} --question values")
        questions = [with_yes_no(cli.check_text(q, "question")) for q in own or []]
        qa_pairs = list(zip(questions, answers, strict=True))
        overlay, description = None, ""
        if args.overlay:
            overlay, description = cli.read_overlay(args.overlay, preset.resolution), f"file {args.overlay}"
        if args.control:
            overlay, control_qa, description = cli.control_from_args(args, preset.resolution)
            qa_pairs = control_qa + qa_pairs
        if not args.out.endswith(".safetensors"):
            raise ValueError(f"--out {args.out!r} must end in .safetensors")
        generator, vlm = cli.load_models(args, preset)
        cond = generator.encode(prompt)
        if args.offload_text_encoders:
            generator.text_encoders_to("cpu")
        bar = {"loss": None}

        def report(step: Step) -> None:
            bar["loss"] = step.loss
            tqdm.write(f"step {step.step:4d}  loss {step.loss:.4f}  P(yes) {step.p_yes:.3f}  {step.elapsed:.1f}s")

        result = optimize(generator, vlm, cond, qa_pairs, overlay=overlay, steps=steps, lr=args.lr,
                          rank=args.rank, seed=args.seed, callback=report,
                          gradient_checkpointing={"preset": None, "on": True, "off": False}[args.checkpointing])
        save_result(result, args.out, generator, prompt, qa_pairs, description)
        print(f"saved {args.out} ({len(result.history)} steps, final loss {bar['loss']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
