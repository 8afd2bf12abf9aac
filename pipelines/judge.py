"""LVLM-as-a-judge: rubric scores on a 0-5 scale, VQAScore, and an order-free comparison of two images.

    python -m pipelines.judge --preset tiny --prompt "a red bicycle" --image a.png [--image b.png] [--sampled]

The continuous score reads the judge's digit probabilities at the score position in one forward pass:
E[score] = sum_k k * P("k") over k = 0..5, renormalised over those six tokens. The sampled mode asks for
a written verdict three times (T = 0.9) and averages the scores it can parse.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

import torch
from PIL import Image

from .checks import check_prompt
from .vlm import VLM, from_pil, readable

LEVELS = ["Poor", "Below Average", "Average", "Above Average", "Very Good", "Excellent"]
_SCALE = "\n".join(f"{k}: {name}" for k, name in enumerate(LEVELS))
_FORMAT = ("Reply with 'Score: <a number from 0 to 5>' on the first line, then one or two sentences "
           "explaining the score.")

RUBRICS = {
    "aesthetic": ("You are an art critic. Judge only how the image looks: composition, lighting, colour "
                  "harmony, detail and the absence of artefacts. Ignore what it was meant to show."),
    "alignment": ("You check images against their descriptions. The image was made from the description "
                  "'{prompt}'. Judge how completely and faithfully it shows every object, attribute, count "
                  "and relation the description asks for."),
    "preference": ("You choose pictures for a person who asked for '{prompt}'. Judge how glad they would be "
                   "with this image overall: faithful to the request, well made and pleasant to look at."),
}

# "Score: 4", "**Score:** 4/5", "score = 3.5", "Score - 4 out of 5", "Rating: 4" ...: the number, then
# whatever scale or range follows it ("/5", "out of ten", "to 5"), judged by parse_score.
_SCORE_RE = re.compile(r"\b(?:score|rating)\s*\**\s*[:=\-]?\s*\**\s*(-?\d+(?:\.\d+)?)(?![\d.,]\d|[eE][+-]?\d)"
                       r"(?:\s*\**\s*(/|out\s+of|to|-|–)\s*(\S+))?", re.IGNORECASE)


def rubric_prompt(rubric: str, prompt: str = "") -> str:
    if rubric not in RUBRICS:
        raise ValueError(f"unknown rubric {rubric!r}; available: {', '.join(RUBRICS)}")
    if "{prompt}" in RUBRICS[rubric] and not prompt.strip():
        raise ValueError(f"the {rubric} rubric needs the prompt the image was made from")
    return f"{RUBRICS[rubric].format(prompt=prompt.strip())}\nRate the image on this scale:\n{_SCALE}\n{_FORMAT}"


def parse_score(text: str) -> float | None:
    """The first score in a judge's reply, or None when there is none we can trust.

    A value outside 0..5 or out of another scale ("8/10") is not rescaled: guessing would turn a misread
    into a confident wrong number, and the UI shows "no score" instead.
    """
    match = _SCORE_RE.search(text or "")
    if not match:
        return None
    value, joiner, scale = float(match.group(1)), match.group(2), match.group(3)
    if joiner is not None:
        if joiner.lower() in ("to", "-", "–"):  # "Score: 0 to 5, I pick 2": a range, not a score
            return None
        if re.match(r"5(?:\.0)?\b", scale) is None:  # only "/5" or "out of 5" is our scale
            return None
    return value if 0 <= value <= 5 else None


@dataclass
class Verdict:
    rubric: str
    score: float | None  # None: the judge gave no score we could read
    explanation: str = ""  # the judge's one-line reason (`first_reason`); "" when it wrote nothing readable
    digit_probs: list[float] | None = None  # P("0") .. P("5") in the continuous mode

    def label(self) -> str:
        return "no score" if self.score is None else f"{self.score:.2f} / 5"


SCORE_PREFIX = "Score:"


def digit_ids(vlm: VLM) -> list[int]:
    """The token of each digit 0-5 as the judge writes it right after "Score:" (a space and the digit may be
    one token, as in sentencepiece, or two)."""
    ids = []
    for k in range(6):
        after = vlm.tokens_after(SCORE_PREFIX, f" {k}")
        if len(after) == 2 and vlm.tokenizer.decode(after[:1]).strip() == "":
            after = after[1:]  # a lone space token: the digit is the token after it
        if len(after) != 1:
            raise ValueError(f"this VLM's tokenizer writes the score {k} as {len(after)} tokens, not one")
        ids.append(after[0])
    return ids


def score_prefix(vlm: VLM) -> str:
    """What the judge has written when the digit comes next: "Score:" plus a space unless the digit
    tokens carry their own."""
    return SCORE_PREFIX + (" " if len(vlm.tokens_after(SCORE_PREFIX, " 0")) == 2 else "")


@torch.no_grad()
def continuous_scores(vlm: VLM, items: list[tuple[Image.Image, str, str]]) -> list[Verdict]:
    """Expected score from the digit probabilities after "Score:", for (image, rubric, prompt) items,
    all in one batched forward."""
    ids, prefix = digit_ids(vlm), score_prefix(vlm)
    rows = [(from_pil(im), rubric_prompt(rubric, p), prefix) for im, rubric, p in items]
    probs = torch.softmax(vlm.next_token_logits(rows)[:, ids], dim=-1)
    expected = (probs * torch.arange(6, device=probs.device)).sum(-1)
    return [Verdict(rubric, float(e), digit_probs=[float(x) for x in p])
            for (_, rubric, _), e, p in zip(items, expected, probs, strict=True)]


def sampled_score(vlm: VLM, image: Image.Image, rubric: str, prompt: str = "", samples: int = 3,
                  temperature: float = 0.9, seed: int = 0) -> Verdict:
    """Mean of the scores parsed from `samples` written verdicts; the first readable one explains."""
    replies = vlm.generate_text(rubric_prompt(rubric, prompt), image=image, max_new_tokens=96,
                                temperature=temperature, top_p=0.9, num_return_sequences=samples, seed=seed)
    scores = [s for s in map(parse_score, replies) if s is not None]
    explanation = next((r for r in replies if parse_score(r) is not None), replies[0] if replies else "")
    return Verdict(rubric, sum(scores) / len(scores) if scores else None, first_reason(explanation))


REASON_CHARS = 160  # a reason longer than this is cut at a word boundary: it is one line of a table


def first_reason(reply: str) -> str:
    """The reason in a written verdict: its first line once the "Score: n" is taken out, cut to REASON_CHARS; ""
    when that line is not readable text (`vlm.readable`)."""
    text = _SCORE_RE.sub("", reply or "", count=1)
    lines = [line.strip(" *-:\t") for line in text.splitlines() if line.strip(" *-:\t")]
    if not lines or not readable(lines[0]):
        return ""
    line = lines[0]
    return line if len(line) <= REASON_CHARS else line[:REASON_CHARS].rsplit(" ", 1)[0] + "..."


@torch.no_grad()
def reason(vlm: VLM, image: Image.Image, prompt: str) -> str:
    """The judge's one-line reason for its preference score of `image` for `prompt` (greedy: repeatable)."""
    return first_reason(vlm.generate_text(rubric_prompt("preference", prompt), image=image, max_new_tokens=64)[0])


def vqa_question(prompt: str) -> str:
    return f"Does this figure show '{prompt.strip()}'? Answer with Yes or No."


@torch.no_grad()
def vqa_scores(vlm: VLM, images: list[Image.Image], prompts: list[str]) -> list[float]:
    """VQAScore: P("Yes") to "Does this figure show '{prompt}'?", batched."""
    items = [(from_pil(im), vqa_question(p), "Yes") for im, p in zip(images, prompts, strict=True)]
    return [float(x) for x in torch.exp(-vlm.nll_rows(items))]


def side_by_side(left: Image.Image, right: Image.Image, gap: int = 8) -> Image.Image:
    """Two images on one canvas (the VLM sees one image), both scaled to the same height."""
    h = min(left.height, right.height)
    left = left.convert("RGB").resize((round(left.width * h / left.height), h))
    right = right.convert("RGB").resize((round(right.width * h / right.height), h))
    canvas = Image.new("RGB", (left.width + gap + right.width, h), "white")
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + gap, 0))
    return canvas


COMPARE_QUESTION = ("Two images made for '{prompt}' are shown side by side. Is the LEFT image the better one "
                    "for this request? Answer with Yes or No.")


@dataclass
class Comparison:
    p_first_better: float  # averaged over both orders: symmetric by construction
    left_first: float  # P(left better) with the first image on the left
    left_second: float  # P(left better) with the second image on the left
    orders_agree: bool  # False when each order prefers whichever image is on the left (or right)

    @property
    def winner(self) -> str:
        """"tie" within 0.01 of an even call: closer than that is not a preference worth reporting."""
        margin = self.p_first_better - 0.5
        return "tie" if abs(margin) < 0.01 else "first" if margin > 0 else "second"


@torch.no_grad()
def compare(vlm: VLM, first: Image.Image, second: Image.Image, prompt: str) -> Comparison:
    """Which of two images is better, asked in both orders and averaged so the order cannot matter."""
    question = COMPARE_QUESTION.format(prompt=check_prompt(prompt))
    items = [(from_pil(side_by_side(first, second)), question, "Yes"),
             (from_pil(side_by_side(second, first)), question, "Yes")]
    p_left_1, p_left_2 = (float(x) for x in torch.exp(-vlm.nll_rows(items)))
    # Both orders' verdicts on "first is better", averaged: swapping the images swaps p_left_1 and
    # p_left_2, so the result becomes exactly 1 - itself: order-free by construction.
    p_first = (p_left_1 + (1 - p_left_2)) / 2
    # Each order on its own prefers the first image when it is on the left and liked, or on the right and not.
    return Comparison(p_first, p_left_1, p_left_2, orders_agree=(p_left_1 > 0.5) == (p_left_2 <= 0.5))


@dataclass
class Report:
    prompt: str
    vqa_score: float
    verdicts: dict[str, Verdict]


def judge(vlm: VLM, image: Image.Image, prompt: str, sampled: bool = False, seed: int = 0) -> Report:
    """All three rubrics plus VQAScore for one image."""
    prompt = check_prompt(prompt)
    if sampled:
        verdicts = {r: sampled_score(vlm, image, r, prompt, seed=seed) for r in RUBRICS}
    else:
        verdicts = {v.rubric: v for v in continuous_scores(vlm, [(image, r, prompt) for r in RUBRICS])}
        # The continuous mode still shows the judge's words: one greedy reply for the overall verdict, its reason.
        verdicts["preference"].explanation = reason(vlm, image, prompt)
    return Report(prompt, vqa_scores(vlm, [image], [prompt])[0], verdicts)


if __name__ == "__main__":  # the command lives in pipelines/commands/judge.py
    from .commands.judge import main

    sys.exit(main())
