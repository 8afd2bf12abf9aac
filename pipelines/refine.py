"""Prompt refinement in two modes, and image-to-prompt.

Text mode (`refine`): the loaded VLM rewrites a short prompt into N candidates, every candidate is generated from
the same seed, the same VLM judges every image, and the candidates are ranked with the original prompt as the
baseline row (Yang et al. 2025's self-rewarding loop, without the training; see self_reward.py for that).

Pivot mode (`pivot`): refinement through an image (PRIP, Zhan et al. 2024, "Prompt Refinement with Image Pivot for
Text-to-Image Generation"): K images of the user's prompt are judged and the best becomes the pivot, the image the
user would prefer; the VLM then looks at the pivot and writes prompts that would make the generator render it,
each beginning with the user's prompt; those are generated from the baseline's seed and ranked as in text mode.
PRIP trains both steps; here the generator and the judge do them without training.

    python -m pipelines.refine --preset tiny --prompt "a cat on a windowsill" --n 8
    python -m pipelines.refine --preset tiny --prompt "a cat on a windowsill" --mode pivot --pivots 4
    python -m pipelines.refine --preset tiny --image photo.png
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import PeftModel
from PIL import Image

from . import judge
from .checks import MAX_CANDIDATES, MAX_SEED, check_pivots, check_prompt, check_seed
from .generator import Generator
from .vlm import VLM, from_pil, readable

REWRITE = ("Rewrite this short request into one detailed prompt for a text-to-image model. Keep its subject "
           "and intent; add concrete details of composition, lighting, colours, style and setting. "
           "Reply with the prompt only, in one paragraph.\nRequest: {prompt}")
IMAGE_TO_PROMPT = ("Write the prompt a text-to-image model would need to recreate this image: subject, "
                   "setting, composition, colours, lighting and style, in one paragraph. Reply with the "
                   "prompt only.")
PIVOT_TO_PROMPT = ("This image was made for the request \"{prompt}\". Write the prompt a text-to-image model "
                   "needs to render exactly this image, as prompt-sharing sites write them: begin with the request "
                   "word for word, then add comma-separated keywords for the subject, style, lighting, colours "
                   "and composition you see. Reply with the prompt only, in one line.")
SAME_CONTENT = ("Two images are shown side by side. Do they show the same scene, with the same subject, "
                "composition and style? Answer with Yes or No.")
ATTEMPTS = 4  # batches of replies sampled at most while duplicates and unreadable ones are dropped
RUBRICS = ("aesthetic", "alignment", "preference")

_LABEL = re.compile(r"^\s*(?:\*\*)?(?:enhanced|refined|improved|detailed)?\s*(?:prompt|description)\s*"
                    r"(?:\d+)?\s*(?:\*\*)?\s*[:\-]\s*", re.IGNORECASE)


@dataclass
class Candidate:
    prompt: str
    truncated: bool = False  # cut at a word boundary to fit the generator's text limit
    baseline: bool = False  # the user's own prompt
    pivot: bool = False  # one of the K images of the user's own prompt the pivot is chosen from (pivot mode)
    seed: int | None = None  # the noise seed of `image` for pivot images (the other rows share the run's seed)
    image: Image.Image | None = None
    scores: dict[str, float | None] = field(default_factory=dict)  # rubric -> 0..5, plus "vqa" -> 0..1
    reason: str = ""  # the judge's one-line reason for its preference score ("" when it wrote nothing readable)

    @property
    def combined(self) -> float:
        """Mean of the three rubric scores (0..5): the ranking key."""
        values = [self.scores[r] for r in RUBRICS if self.scores.get(r) is not None]
        return sum(values) / len(values) if values else float("-inf")


def clean(text: str) -> str:
    """One generation prompt from a VLM reply: first paragraph, no label, no wrapping quotes."""
    text = text.strip().split("\n\n")[0]
    text = _LABEL.sub("", text).strip().strip("\"'“”").strip()
    return re.sub(r"\s+", " ", text)


class NothingUsable(ValueError):
    """The VLM wrote no usable prompt (random weights, or a model that cannot rewrite): said in one line."""


def nothing_usable(replies: int) -> NothingUsable:
    """The one-line message for a VLM none of whose `replies` was a usable prompt."""
    return NothingUsable(f"the loaded VLM wrote nothing usable as a prompt: none of its {replies} replies was readable "
                         f"text and new (random weights, or a model that cannot rewrite prompts)")


def prompt_key(text: str) -> str:
    """What two prompts share when they are duplicates: lower case, punctuation and spacing folded."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def fit_to_limit(prompt: str, tokenizer, limit: int) -> tuple[str, bool]:
    """Cut a prompt at a word boundary so it fits `limit` tokens; say whether it was cut."""
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=True)["input_ids"])

    if count(prompt) <= limit:
        return prompt, False
    words = prompt.split()
    lo, hi = 0, len(words)  # the longest word prefix that fits, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(" ".join(words[:mid])) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]).rstrip(",;:"), True


def check_n(n: int) -> int:
    if not 1 <= n <= MAX_CANDIDATES:
        raise ValueError(f"number of candidates {n} must be between 1 and {MAX_CANDIDATES}")
    return n


def check_sampling(temperature: float, top_p: float) -> tuple[float, float]:
    if not 0 < temperature <= 2 or not 0 < top_p <= 1:
        raise ValueError(f"temperature {temperature} must be in (0, 2] and top-p {top_p} in (0, 1]")
    return temperature, top_p


def anchored(prompt: str, reply: str) -> str:
    """`reply` beginning with the user's `prompt` verbatim: PRIP's rule against hallucination, the refined prompt
    keeps the user's words and only adds detail. A reply that already begins with them (in any case) gets the
    user's exact spelling; any other reply is put after them."""
    if reply[:len(prompt)].lower() == prompt.lower() and not reply[len(prompt):len(prompt) + 1].isalnum():
        return prompt + reply[len(prompt):]
    if not reply:
        return prompt
    return f"{prompt}{'' if prompt.endswith((',', ';', '.', ':')) else ','} {reply}"


def sample_prompts(vlm: VLM, instruction: str, prompt: str, n: int, temperature: float, top_p: float, seed: int,
                   tokenizer=None, limit: int | None = None, attempts: int = ATTEMPTS, image: Image.Image | None = None,
                   anchor: bool = False) -> list[Candidate]:
    """Up to n distinct generation prompts sampled from the VLM in batches (never `prompt` itself).

    Args:
        vlm: writes the prompts.
        instruction: the VLM's turn (already holding the user's prompt).
        prompt: the user's prompt: a reply equal to it (up to case and punctuation, `prompt_key`) is a duplicate.
        n, temperature, top_p, seed: how many prompts and how they are sampled; duplicates and unreadable replies
            (`readable`) are dropped and the missing ones sampled again, `attempts` times at most, each with the next
            seed.
        tokenizer, limit: the generator's prompt tokenizer and text limit; longer prompts are cut at a word
            boundary and marked (`fit_to_limit`).
        image: shown to the VLM with the instruction (pivot mode: the pivot image).
        anchor: make every prompt begin with the user's prompt (`anchored`); a prompt that adds nothing once cut
            to the limit is dropped.
    """
    seen, out = {prompt_key(prompt)}, []
    for attempt in range(attempts):  # duplicates and unreadable replies are dropped; sample again for the missing ones
        replies = vlm.generate_text(instruction, image=image, max_new_tokens=120, temperature=temperature,
                                    top_p=top_p, num_return_sequences=n - len(out), seed=seed + attempt)
        for reply in map(clean, replies):
            if not readable(reply):
                continue
            reply = anchored(prompt, reply) if anchor else reply
            text, cut = fit_to_limit(reply, tokenizer, limit) if tokenizer and limit else (reply, False)
            if anchor and not text.startswith(prompt):  # cut inside the user's words: it would not begin with them
                continue
            if prompt_key(text) and prompt_key(text) not in seen:  # empty once cut (one giant word): dropped
                seen.add(prompt_key(text))
                out.append(Candidate(text, truncated=cut))
        if len(out) >= n:
            break
    return out[:n]


def propose(vlm: VLM, prompt: str, n: int = 8, temperature: float = 0.9, top_p: float = 0.9, seed: int = 0,
            tokenizer=None, limit: int | None = None, attempts: int = ATTEMPTS) -> list[Candidate]:
    """Up to n distinct rewrites of `prompt` (never the prompt itself), sampled in batches."""
    prompt, n = check_prompt(prompt), check_n(n)
    temperature, top_p = check_sampling(temperature, top_p)
    return sample_prompts(vlm, REWRITE.format(prompt=prompt), prompt, n, temperature, top_p, seed, tokenizer, limit,
                          attempts)


def score_all(vlm: VLM, candidates: list[Candidate], prompt: str, batch_size: int = 4) -> None:
    """Judge every candidate's image against the user's prompt, `batch_size` images per forward."""
    for i in range(0, len(candidates), batch_size):
        chunk = candidates[i:i + batch_size]
        items = [(c, rubric) for c in chunk for rubric in RUBRICS]  # every rubric of the chunk in one forward
        verdicts = judge.continuous_scores(vlm, [(c.image, rubric, prompt) for c, rubric in items])
        for (c, rubric), v in zip(items, verdicts, strict=True):
            c.scores[rubric] = v.score
        for c, v in zip(chunk, judge.vqa_scores(vlm, [c.image for c in chunk], [prompt] * len(chunk)), strict=True):
            c.scores["vqa"] = v


def refine(generator: Generator, vlm: VLM, prompt: str, n: int = 8, temperature: float = 0.9, top_p: float = 0.9,
           seed: int = 0, image_seed: int = 0, batch_size: int = 4, vlm_lora: str | Path | None = None,
           reasons: bool = False) -> list[Candidate]:
    """Self-rewarding refinement: the VLM rewrites `prompt` into candidates, every candidate and the prompt itself
    (the baseline row) are generated from one seed and judged by the same VLM; returned best first.

    Args:
        generator, vlm: the loaded models; the VLM both writes and judges.
        prompt: the user's short prompt.
        n: how many distinct candidates (duplicates are dropped and resampled, over-long ones cut and marked).
        temperature, top_p: sampling of the rewrites.
        seed: sampling seed of the rewrites; image_seed: the one noise seed every image is generated from.
        batch_size: prompts per generation and judging batch.
        vlm_lora: a peft adapter folder of the VLM (from `self_reward`): the model after a self-rewarding round,
            which then both writes and judges.
        reasons: also ask the judge for a one-line reason per row (`judge.reason`).

    Raises:
        NothingUsable: (a ValueError) the VLM wrote no readable prompt that differs from the user's.
    """
    prompt = check_prompt(prompt)
    with vlm_adapter(vlm, vlm_lora):
        candidates = propose(vlm, prompt, n, temperature, top_p, seed, generator.prompt_tokenizer,
                             generator.preset.max_sequence_length)
        if not candidates:
            raise nothing_usable(n * ATTEMPTS)
        return ranked(generator, vlm, prompt, candidates, image_seed, batch_size, reasons)


def ranked(generator: Generator, vlm: VLM, prompt: str, candidates: list[Candidate], image_seed: int,
           batch_size: int = 4, reasons: bool = False) -> list[Candidate]:
    """The user's prompt (the baseline row) and `candidates`, all generated from `image_seed` in batches and judged
    against the user's prompt by the VLM; returned best first. With `reasons`, each row also gets the judge's
    one-line reason (`judge.reason`: one short greedy reply per row)."""
    rows = [Candidate(prompt, baseline=True), *candidates]
    for row, image in zip(rows, generator.generate_batch([r.prompt for r in rows], image_seed,
                                                         batch_size=batch_size), strict=True):
        row.image = image
    score_all(vlm, rows, prompt, batch_size)
    if reasons:
        for row in rows:
            row.reason = judge.reason(vlm, row.image, prompt)
    return sorted(rows, key=lambda r: r.combined, reverse=True)


@dataclass
class Pivoted:
    """What `pivot` returns."""

    pivot: Candidate  # the best-scored image of the user's prompt (its seed in `seed`), the one the VLM described
    pivots: list[Candidate]  # all K images of the user's prompt, best first (the pivot is the first)
    rows: list[Candidate]  # the baseline and the refined prompts, all from the common seed, best first

    @property
    def refined(self) -> list[Candidate]:
        return [r for r in self.rows if not r.baseline]


def pivot_seeds(image_seed: int, k: int) -> list[int]:
    """The K seeds the pivot is chosen from: the common seed and the ones after it (wrapping past MAX_SEED)."""
    return [(image_seed + i) % (MAX_SEED + 1) for i in range(k)]


def pivot(generator: Generator, vlm: VLM, prompt: str, n: int = 8, pivots: int = 4, temperature: float = 0.9,
          top_p: float = 0.9, seed: int = 0, image_seed: int = 0, batch_size: int = 4,
          vlm_lora: str | Path | None = None, reasons: bool = False) -> Pivoted:
    """Refinement through an image pivot (PRIP, Zhan et al. 2024), without training: user prompt -> the image the
    user would prefer -> a prompt in the generator's own "system language" that renders it.

    1. `pivots` images of `prompt` (seeds `image_seed`, `image_seed + 1`, ...) are judged with the rubric scorer
       (`score_all`); the best becomes the pivot, as PRIP takes the most-preferred image as its pivot.
    2. The VLM looks at the pivot and writes `n` distinct prompts that would make the generator render it, each
       beginning with the user's prompt (`anchored`) and cut to the generator's text limit (`fit_to_limit`).
    3. Those prompts and the user's own (the baseline row) are generated from `image_seed` and ranked (`ranked`),
       exactly as in text mode, so the two modes compare on the same prompt and seed.

    Args:
        generator, vlm: the loaded models; the VLM judges the pivots, writes the prompts and judges the results.
        prompt: the user's short prompt; spaces inside it are folded to one (the refined prompts are cut at word
            boundaries, which fold them, and must still begin with it exactly).
        n: how many distinct refined prompts (1 to MAX_CANDIDATES).
        pivots: how many images of the user's prompt the pivot is chosen from (1 to checks.MAX_PIVOTS).
        temperature, top_p: sampling of the written prompts; seed: its seed.
        image_seed: the common noise seed of the baseline and refined images, and the first pivot seed.
        batch_size: images per judging and generation batch.
        vlm_lora: a peft adapter folder of the VLM used while writing the prompts.
        reasons: also ask the judge for a one-line reason per ranked row (`judge.reason`).

    Raises:
        ValueError: naming the value, for an empty prompt, `pivots` or `n` out of range, bad sampling values, a
            bad seed, or a prompt that alone fills the generator's text limit (no room left for detail);
            `NothingUsable` when the VLM writes no readable prompt.
    """
    prompt = " ".join(check_prompt(prompt).split())
    pivots, n, image_seed = check_pivots(pivots), check_n(n), check_seed(image_seed)
    temperature, top_p = check_sampling(temperature, top_p)
    tokenizer, limit = generator.prompt_tokenizer, generator.preset.max_sequence_length
    if fit_to_limit(prompt, tokenizer, limit - 1)[1]:
        raise ValueError(f"the prompt fills the generator's text limit ({limit} tokens): a refined prompt begins "
                         f"with it, so no detail would fit; shorten the prompt")
    # 1. user -> pivot: one image per seed, `batch_size` seeds per pipeline call, judged in batches.
    seeds = pivot_seeds(image_seed, pivots)
    candidates = [Candidate(prompt, pivot=True, seed=s, image=image)
                  for s, image in zip(seeds, generator.generate_seeds(prompt, seeds, batch_size=batch_size),
                                      strict=True)]
    score_all(vlm, candidates, prompt, batch_size)
    candidates.sort(key=lambda c: c.combined, reverse=True)  # stable: of equal scores the lower seed leads
    best = candidates[0]
    # 2. pivot -> system prompts, written while the VLM sees the pivot.
    with vlm_adapter(vlm, vlm_lora):
        refined = sample_prompts(vlm, PIVOT_TO_PROMPT.format(prompt=prompt), prompt, n, temperature, top_p, seed,
                                 tokenizer, limit, image=best.image, anchor=True)
    if not refined:
        raise nothing_usable(n * ATTEMPTS)
    # 3. every refined prompt and the user's own from the common seed, judged and ranked.
    return Pivoted(best, candidates, ranked(generator, vlm, prompt, refined, image_seed, batch_size, reasons))


def check_vlm_lora(path: str | Path) -> Path:
    """A peft adapter folder (what `self_reward` writes): refused naming the folder when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"VLM LoRA folder {str(path)!r} does not exist or is not a folder")
    if not (path / "adapter_config.json").is_file():
        raise ValueError(f"VLM LoRA folder {str(path)!r} has no adapter_config.json: not a peft adapter folder")
    return path


@contextmanager
def vlm_adapter(vlm: VLM, path: str | Path | None) -> Iterator[None]:
    """Use a LoRA of the VLM's language model (from self_reward.py) for the duration of a block."""
    if path is None:
        yield
        return

    check_vlm_lora(path)
    base = vlm.model
    try:
        vlm.model = PeftModel.from_pretrained(base, str(path)).eval()
    except (RuntimeError, ValueError, KeyError, OSError) as exc:  # made for another VLM: not a load_state_dict dump
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"VLM LoRA folder {str(path)!r} does not fit this VLM ({first})") from None
    try:
        yield
    finally:
        vlm.model = vlm.model.unload()  # removes the LoRA layers: the shared VLM is as before


def image_to_prompt(vlm: VLM, image: Image.Image, tokenizer=None, limit: int | None = None) -> Candidate:
    """A generation prompt that describes `image` (greedy, so it is repeatable)."""
    text = clean(vlm.generate_text(IMAGE_TO_PROMPT, image=image, max_new_tokens=120)[0])
    if not text:
        raise ValueError("the VLM wrote no prompt for this image")
    text, cut = fit_to_limit(text, tokenizer, limit) if tokenizer and limit else (text, False)
    return Candidate(text, truncated=cut)


@torch.no_grad()
def similarity(vlm: VLM, original: Image.Image, recreated: Image.Image) -> float:
    """P("Yes") that the two images show the same scene, asked with both orders and averaged."""
    items = [(from_pil(judge.side_by_side(original, recreated)), SAME_CONTENT, "Yes"),
             (from_pil(judge.side_by_side(recreated, original)), SAME_CONTENT, "Yes")]
    return float(torch.exp(-vlm.nll_rows(items)).mean())


def recreate(generator: Generator, vlm: VLM, image: Image.Image, seed: int = 0) -> tuple[Candidate, float]:
    """Image -> prompt -> new image; returns the prompt (with its image) and how close the result is."""
    candidate = image_to_prompt(vlm, image, generator.prompt_tokenizer, generator.preset.max_sequence_length)
    candidate.image = generator.generate(candidate.prompt, seed)
    return candidate, similarity(vlm, image, candidate.image)


if __name__ == "__main__":  # the command lives in pipelines/commands/refine.py
    from .commands.refine import main

    sys.exit(main())
