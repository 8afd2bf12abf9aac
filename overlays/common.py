"""Helpers shared by the control modules: the size check, the question suffix, the colour red (number checks and
limits: `pipelines/checks.py`).

Every invalid user input raises ValueError naming the value, wrong types included, so a UI can turn
exactly that exception into a message for the user (gr.Error) and let real bugs surface.
"""

from __future__ import annotations

import numbers

SUFFIX = "Answer with Yes or No."
RED = (255, 0, 0)


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Validate a (width, height) pair of positive ints."""
    try:
        width, height = size
    except (TypeError, ValueError):
        raise ValueError(f"size {size!r} is not a (width, height) pair") from None
    if not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in (width, height)
    ):
        raise ValueError(f"size {size!r} must be two positive ints (width, height)")
    return int(width), int(height)


def with_suffix(question: str) -> str:
    """Make a question end with the paper's "Answer with Yes or No." (the VLM loss scores Yes/No)."""
    q = " ".join(question.split())
    if q.endswith(SUFFIX):
        return q
    return f"{q} {SUFFIX}"
