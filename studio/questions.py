"""The questions box: "question | expected answer" lines, and questions drafted by the VLM."""

from __future__ import annotations

import re
from collections.abc import Sequence

from pipelines.checks import APP_MAX_QUESTIONS, MAX_ANSWER_CHARS, MAX_QUESTION_CHARS, check_int, check_prompt
from pipelines.optimize import normalise_answer, with_yes_no
from pipelines.vlm import QA, VLM


def _needs_yes_no(answer: str) -> bool:
    return answer.strip().lower() in ("yes", "no")


def parse_questions(text: str | None, default_answer: str = "Yes") -> list[QA]:
    """One pair per line, "question | expected answer" (answer defaults to Yes); blank and # lines skipped.

    Questions expecting Yes or No get "Answer with Yes or No." appended, as in training.
    """
    pairs: list[QA] = []
    for n, raw in enumerate((text or "").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        question, _, answer = line.rpartition("|") if "|" in line else (line, "", default_answer)
        question, answer = question.strip(), answer.strip()
        if not question:
            raise ValueError(f"line {n} {line!r}: the question is empty")
        if not answer:
            raise ValueError(f"line {n} {line!r}: the expected answer after '|' is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise ValueError(f"line {n}: the question has {len(question)} characters; at most {MAX_QUESTION_CHARS}")
        if len(answer) > MAX_ANSWER_CHARS:
            raise ValueError(f"line {n}: the expected answer has {len(answer)} characters; at most {MAX_ANSWER_CHARS}")
        answer = normalise_answer(answer)  # "yes" -> "Yes": the token the question asks for
        pairs.append((with_yes_no(question) if _needs_yes_no(answer) else question, answer))
    if not pairs:
        raise ValueError("there are no questions: write one per line, as 'question | expected answer'")
    if len(pairs) > APP_MAX_QUESTIONS:
        raise ValueError(f"{len(pairs)} questions given; at most {APP_MAX_QUESTIONS}")
    return pairs


def format_questions(pairs: Sequence[QA]) -> str:
    return "\n".join(f"{q} | {a}" for q, a in pairs)


DRAFT_INSTRUCTION = (
    "Write {n} short yes/no questions that check whether a picture matches this description: \"{prompt}\". "
    "A faithful picture must get the answer Yes to every question. "
    "Write one question per line and nothing else."
)
_LEAD = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d+[.):]|q(?:uestion)?\s*\d*\s*[:.)])\s*", re.IGNORECASE)


def parse_drafted(text: str, n: int) -> list[str]:
    """Questions from a VLM's reply: one per line, list markers and quotes stripped, up to the first '?',
    at least three words, no duplicates, at most n."""
    out: list[str] = []
    seen: set[str] = set()
    for raw in text.splitlines():
        line = _LEAD.sub("", raw).strip().strip("\"'`\u201c\u201d ")
        if "?" not in line:
            continue
        question = line[: line.index("?") + 1].strip()
        if len(re.findall(r"[^\W\d_]+", question)) < 3:
            continue
        question = question[0].upper() + question[1:]
        if question.lower() in seen:
            continue
        seen.add(question.lower())
        out.append(question)
        if len(out) == n:
            break
    return out


def template_questions(prompt: str, n: int) -> list[str]:
    """Generic starting points when the VLM's reply holds no usable question."""
    subject = prompt.strip().rstrip(".!?")
    templates = [
        f"Does the image show {subject}?",
        f"Is every part of the description \"{subject}\" visible in the image?",
        "Is the main subject clearly recognisable?",
        "Is the image free of distorted or malformed objects?",
        "Is the scene physically plausible?",
        "Are the colours and lighting consistent across the image?",
        "Is the image sharp and free of artifacts?",
        "Does the composition look balanced?",
    ]
    return templates[:n]


def draft_questions(vlm: VLM, prompt: str, n: int = 4, max_new_tokens: int | None = None) -> tuple[list[str], str]:
    """Ask the loaded VLM for n yes/no questions about the prompt (greedy, no external API).

    Returns (questions, note). If the reply holds no usable question (e.g. random weights), the note says
    so, quotes the reply, and generic template questions are returned for the user to edit.
    """
    prompt = check_prompt(prompt)
    n = check_int(n, "number of questions", 1, APP_MAX_QUESTIONS)
    reply = vlm.generate_text(DRAFT_INSTRUCTION.format(n=n, prompt=prompt),
                              max_new_tokens=max_new_tokens or min(48 * n, 384))[0]
    drafted = parse_drafted(reply, n)
    if drafted:
        return drafted, f"{len(drafted)} question(s) drafted by the VLM; edit them as you like."
    shown = " ".join(reply.split())[:160]
    return template_questions(prompt, n), (
        f"The VLM's reply held no usable question (it said: {shown!r}); these are generic templates to edit.")
