"""One self-rewarding round: the VLM refines prompts, judges the images, and learns from its own verdicts.

For each prompt the refiner's candidates are generated and scored; the best and the worst candidate
(with distinct scores) become a preference pair, written as JSONL. DPO (beta 0.1) then trains a LoRA of
the VLM's language model to prefer writing the better rewrite; `pipelines.refine --vlm-lora` uses it.

With `--pivot-pairs FILE.jsonl` it also refines every prompt through an image pivot (`refine.pivot`, PRIP) and
writes (pivot image, winning system prompt) pairs: the pivot as a PNG beside the file, one JSONL row per prompt
(`PivotPair`), so the VLM's pivot -> system step can be trained later on its own results.

    python -m pipelines.self_reward --preset tiny --prompts prompts.txt --rounds 1 --out runs/sr
    python -m pipelines.self_reward --preset tiny --prompts prompts.txt --pivot-pairs runs/sr/pivots.jsonl
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from PIL import Image
from tqdm.auto import tqdm

from . import files
from .checks import check_prompt
from .generator import Generator
from .refine import REWRITE, NothingUsable, pivot, propose, refine, score_all, vlm_adapter
from .vlm import VLM

# The language model's attention projections only: the vision tower is not asked to change.
VLM_LORA_TARGETS = r".*(language_model|text_model).*\.(q_proj|k_proj|v_proj|o_proj)"


@dataclass
class Pair:
    prompt: str
    chosen: str
    rejected: str
    chosen_score: float
    rejected_score: float


def preference_pairs(generator: Generator, vlm: VLM, prompts: list[str], n: int = 8, seed: int = 0,
                     min_gap: float = 0.0, vlm_lora: str | Path | None = None) -> list[Pair]:
    """Best and worst rewrite of each prompt by the VLM's own scores; ties give no pair. With `vlm_lora` (an earlier
    round's LoRA) the new model both writes and judges, as a self-rewarding round asks."""
    pairs = []
    with vlm_adapter(vlm, vlm_lora):
        for i, prompt in enumerate(tqdm(prompts, desc="judging candidates")):
            try:
                rows = [r for r in refine(generator, vlm, prompt, n=n, seed=seed + i, image_seed=seed)
                        if not r.baseline]
            except NothingUsable:  # no readable rewrite of this prompt: no pair
                continue
            if len(rows) >= 2 and rows[0].combined - rows[-1].combined > min_gap:
                pairs.append(Pair(prompt, rows[0].prompt, rows[-1].prompt, rows[0].combined, rows[-1].combined))
    return pairs


@dataclass
class PivotPair:
    """One prompt refined through an image pivot: the pivot image and the system prompt that won with it."""

    image: str  # the pivot image, a PNG path relative to the JSONL file
    prompt: str  # the user's prompt (every system prompt begins with it)
    system_prompt: str  # the best-scored refined prompt, written by the VLM looking at the pivot
    system_score: float  # its image's combined score (0-5), generated from the common seed
    rejected: str | None  # the worst-scored refined prompt (for DPO), None with fewer than two distinct scores
    rejected_score: float | None
    baseline_score: float  # the user's prompt from the same seed
    pivot_seed: int
    pivot_score: float
    seed: int  # the common seed of the baseline and refined images


def pivot_pairs(generator: Generator, vlm: VLM, prompts: list[str], out: str | Path, n: int = 8, pivots: int = 4,
                seed: int = 0) -> list[PivotPair]:
    """Refine each prompt through an image pivot (`refine.pivot`) and write (pivot image, winning system prompt)
    pairs: `out` (JSONL, one `PivotPair` per line) and the pivots as PNG files beside it, named after `out`.

    Args:
        generator, vlm: the loaded models (the VLM as loaded: the rounds' LoRAs learn the text rewriter's turn).
        prompts: the user prompts; one with no refined prompt left (all duplicates) gives no row.
        out: the JSONL file; its folder is created.
        n, pivots: refined prompts per prompt and images the pivot is chosen from.
        seed: the common image seed; the i-th prompt's prompts are sampled with seed + i.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i, prompt in enumerate(tqdm(prompts, desc="pivot pairs")):
        result = pivot(generator, vlm, prompt, n=n, pivots=pivots, seed=seed + i, image_seed=seed)
        refined = result.refined
        if not refined:
            continue
        best, worst = refined[0], refined[-1]
        baseline = next(r for r in result.rows if r.baseline)  # its prompt: the user's, spaces folded
        name = f"{out.stem}-{i:04d}.png"
        with files.replacing(out.parent / name) as tmp:
            result.pivot.image.save(tmp, format="PNG")
        distinct = best.combined > worst.combined
        pairs.append(PivotPair(name, baseline.prompt, best.prompt, best.combined,
                               worst.prompt if distinct else None, worst.combined if distinct else None,
                               baseline.combined, result.pivot.seed, result.pivot.combined, seed))
    files.write_text(out, "".join(json.dumps(asdict(p)) + "\n" for p in pairs))
    return pairs


def response_logprob(vlm: VLM, prompts: list[str], responses: list[str]) -> torch.Tensor:
    """Sum of log P(response tokens | the refiner's instruction), one value per row, text only."""
    rows, spans = [], []
    for prompt, response in zip(prompts, responses, strict=True):
        context, answer = vlm.encode_turn(REWRITE.format(prompt=prompt), None, response)
        rows.append((None, context + answer))
        spans.append((len(context), len(answer)))
    logits = vlm.forward(rows)
    out = []
    for row, (start, n) in enumerate(spans):
        logp = torch.log_softmax(logits[row, start - 1:start - 1 + n], dim=-1)
        target = torch.tensor(rows[row][1][start:start + n], device=logits.device)
        out.append(logp.gather(-1, target[:, None]).sum())
    return torch.stack(out)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO (Rafailov et al. 2023): -log sigmoid(beta * margin), margin = chosen minus rejected log-ratio."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean(), margin.detach()


def train_dpo(vlm: VLM, pairs: list[Pair], out_dir: str | Path, epochs: int = 3, lr: float = 5e-5,
              beta: float = 0.1, rank: int = 8, batch_size: int = 4, init_from: str | Path | None = None
              ) -> list[dict]:
    """DPO on a LoRA of the VLM's language model; saves the adapter to `out_dir`. The shared VLM is
    restored afterwards. Returns one log row (loss, mean margin) per optimizer step.

    `init_from` continues an earlier round's LoRA; the reference policy is always the VLM without LoRA.
    """
    if not pairs:
        raise ValueError("no preference pairs: every prompt's candidates scored the same")
    if epochs < 1 or not 0 < lr < 1 or not 0 < beta < float("inf"):  # NaN fails every comparison
        raise ValueError(f"epochs {epochs} must be at least 1, lr {lr} in (0, 1) and beta {beta} positive")
    base, log = vlm.model, []
    try:
        if init_from is not None:
            vlm.model = PeftModel.from_pretrained(base, str(init_from), is_trainable=True)
        else:
            vlm.model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                                        target_modules=VLM_LORA_TARGETS))
        model = vlm.model
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        for _ in range(epochs):
            for i in range(0, len(pairs), batch_size):
                batch = pairs[i:i + batch_size]
                prompts = [p.prompt for p in batch]
                with torch.no_grad(), model.disable_adapter():  # the reference policy: the VLM as it was
                    ref_c = response_logprob(vlm, prompts, [p.chosen for p in batch])
                    ref_r = response_logprob(vlm, prompts, [p.rejected for p in batch])
                loss, margin = dpo_loss(response_logprob(vlm, prompts, [p.chosen for p in batch]),
                                        response_logprob(vlm, prompts, [p.rejected for p in batch]),
                                        ref_c, ref_r, beta)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                log.append({"loss": loss.item(), "margin": margin.mean().item()})
        model.save_pretrained(str(out_dir))
    finally:
        if vlm.model is not base:
            vlm.model = vlm.model.unload()  # the base model without LoRA layers
        vlm.model.requires_grad_(False)
    return log


Truth = Callable[[Image.Image, str], dict[str, float]]  # image, user prompt -> named analytic scores (toy world)


def rewrite_quality(generator: Generator, vlm: VLM, prompts: list[str], n: int = 4, seed: int = 0,
                    writer_lora: str | Path | None = None, truth: Truth | None = None) -> dict[str, float]:
    """How good the VLM's rewrites of `prompts` are: `n` rewrites of each (written with `writer_lora` where given),
    each generated from `seed` and judged by the VLM as it is (outside `writer_lora`: one yardstick before and after
    a round). Returns the number of samples, the judge's mean combined score (0-5) and, with `truth`, the mean of
    each of its scores."""
    judged: list[float] = []
    measured: dict[str, list[float]] = {}
    for i, prompt in enumerate(prompts):
        with vlm_adapter(vlm, writer_lora):
            candidates = propose(vlm, prompt, n=n, seed=seed + i, tokenizer=generator.prompt_tokenizer,
                                 limit=generator.preset.max_sequence_length)
        if not candidates:
            continue
        for c, image in zip(candidates, generator.generate_batch([c.prompt for c in candidates], seed), strict=True):
            c.image = image
        score_all(vlm, candidates, prompt)
        judged += [c.combined for c in candidates]
        for c in candidates if truth else ():
            for key, value in truth(c.image, prompt).items():
                measured.setdefault(key, []).append(value)
    if not judged:
        raise NothingUsable("the loaded VLM wrote no readable rewrite of any prompt: there is nothing to measure")
    return {"samples": len(judged), "judged": sum(judged) / len(judged),
            **{k: sum(v) / len(v) for k, v in measured.items()}}


@dataclass
class Round:
    """One self-rewarding round, as the CLI prints it and the app shows it."""

    pairs: int
    lora: str  # the VLM LoRA folder the round saved
    loss: tuple[float, float]  # DPO loss at the first and the last step
    margin: tuple[float, float]  # mean chosen-minus-rejected log-ratio margin, first and last step
    before: dict[str, float]  # `rewrite_quality` of the VLM before the round
    after: dict[str, float]  # and with the round's LoRA writing

    def lines(self) -> list[str]:
        """Before and after, one line per figure."""
        names = {"judged": "judge's score of the rewrites (0-5, the VLM without the LoRA judges both)",
                 "aesthetic": "analytic aesthetic (0-5)", "alignment": "analytic alignment (0-1)",
                 "preference": "analytic preference (0-5)"}
        out = [f"{self.pairs} preference pairs; DPO loss {self.loss[0]:.4f} -> {self.loss[1]:.4f}, margin "
               f"{self.margin[0]:.3f} -> {self.margin[1]:.3f}; VLM LoRA in {self.lora}"]
        for key, name in names.items():
            if key in self.before and key in self.after:
                b, a = self.before[key], self.after[key]
                out.append(f"{name}: {b:.3f} -> {a:.3f} ({a - b:+.3f})")
        return out


def self_improve(generator: Generator, vlm: VLM, prompts: list[str], out_dir: str | Path, n: int = 8, seed: int = 0,
                 samples: int = 4, epochs: int | None = None, lr: float | None = None, beta: float = 0.1,
                 init_from: str | Path | None = None, truth: Truth | None = None) -> Round:
    """One self-rewarding round, measured: the rewrites before, pairs from the model's own samples and verdicts
    (`preference_pairs`), DPO (`train_dpo`), the rewrites after.

    Args:
        generator, vlm: the loaded models.
        prompts: the short prompts the round learns from.
        out_dir: where the pairs (`pairs.jsonl`) and the VLM LoRA (`vlm-lora/`) are written.
        n: candidates per prompt for the pairs; seed: their sampling and image seed.
        samples: rewrites per prompt for the before/after figures (generated from seed + 1, not a pair's seed).
        epochs, lr, beta: DPO's settings (epochs and lr default to the preset's `dpo_epochs`, `dpo_learning_rate`).
        init_from: an earlier round's LoRA: the model this round starts from (it writes and judges the pairs).
        truth: analytic scores of an image for a prompt (the toy world's `world.scores`), added to the figures.
    """
    out_dir = Path(out_dir)
    before = rewrite_quality(generator, vlm, prompts, samples, seed + 1, init_from, truth)
    pairs = preference_pairs(generator, vlm, prompts, n=n, seed=seed, vlm_lora=init_from)
    if not pairs:
        raise ValueError("no preference pairs: for every prompt the VLM wrote no usable rewrite, or scored them all "
                         "the same")
    out_dir.mkdir(parents=True, exist_ok=True)
    files.write_text(out_dir / "pairs.jsonl", "".join(json.dumps(asdict(p)) + "\n" for p in pairs))
    lora = out_dir / "vlm-lora"
    preset = generator.preset
    log = train_dpo(vlm, pairs, lora, epochs=epochs or preset.dpo_epochs, lr=lr or preset.dpo_learning_rate,
                    beta=beta, init_from=init_from)
    after = rewrite_quality(generator, vlm, prompts, samples, seed + 1, lora, truth)
    return Round(len(pairs), str(lora), (log[0]["loss"], log[-1]["loss"]), (log[0]["margin"], log[-1]["margin"]),
                 before, after)


def read_prompts(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"prompts file {str(path)!r} is not UTF-8 text (byte {exc.start})") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"prompts file {str(path)!r} has no prompts (one per line)")
    return [check_prompt(p) for p in prompts]


if __name__ == "__main__":  # the command lives in pipelines/commands/self_reward.py
    from .commands.self_reward import main

    sys.exit(main())
