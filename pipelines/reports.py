"""How judge and refinement results read: Markdown for the page, tables for the page and the terminal.

Kept apart from the scoring itself (`judge.py`, `refine.py`), which returns numbers and dataclasses.
"""

from __future__ import annotations

from .judge import LEVELS, Comparison, Report, vqa_question
from .refine import RUBRICS, Candidate, Pivoted


def report_markdown(report: Report, title: str) -> str:
    """A judge's report for the page: scores on the 0-5 rubric with the level's name, and the judge's words."""
    lines = [f"### {title}", f"VQAScore, P(Yes) to \"{vqa_question(report.prompt)}\": **{report.vqa_score:.4f}**", ""]
    for rubric, v in report.verdicts.items():
        level = "" if v.score is None else f" ({LEVELS[min(5, max(0, round(v.score)))]})"
        lines.append(f"- **{rubric}**: {v.label()}{level}")
    words = [f"> _{rubric}_: {v.explanation.strip()}" for rubric, v in report.verdicts.items() if v.explanation.strip()]
    if not words:  # a VLM with random weights writes byte soup: not shown as its reasoning
        words = ["_The judge wrote no readable explanation (a VLM that cannot write, such as random weights)._"]
    return "\n".join(lines + [""] + words)


def comparison_markdown(c: Comparison) -> str:
    verdict = {"first": "image A", "second": "image B", "tie": "neither (a tie)"}[c.winner]
    text = (f"### A or B?\nThe judge prefers **{verdict}**: P(A is better) = **{c.p_first_better:.3f}**, "
            f"averaged over both orders (A left: P(left better) = {c.left_first:.3f}; B left: {c.left_second:.3f}).")
    if not c.orders_agree:
        text += ("\n\n**The two orders disagree**: the judge's answer depends on which image is on the left, so "
                 "treat this verdict as weak.")
    return text


TABLE_HEADERS = ["rank", "combined", "aesthetic", "alignment", "preference", "VQAScore", "judge's reason", "prompt"]


def table(rows: list[Candidate]) -> list[list[object]]:
    """One row per candidate, best first; unreadable scores are "no score", never 0."""
    out = []
    for i, r in enumerate(rows, 1):
        scores = [round(r.scores[k], 3) if r.scores.get(k) is not None else "no score" for k in (*RUBRICS, "vqa")]
        tag = (" [baseline]" if r.baseline else f" [pivot image, seed {r.seed}]" if r.pivot else
               " [cut]" if r.truncated else "")
        out.append([i, round(r.combined, 3), *scores, r.reason, r.prompt + tag])
    return out


def pivot_table(result: Pivoted) -> list[list[object]]:
    """Pivot mode's table: the pivot image's row first (rank "pivot": it comes from another seed, so it stays out of
    the ranking), then the baseline and the refined prompts, best first."""
    return [["pivot", *table([result.pivot])[0][1:]], *table(result.rows)]


def format_table(rows: list[Candidate]) -> str:
    """`table` as aligned text for the terminal."""
    return format_rows(table(rows))


def format_pivot_table(result: Pivoted) -> str:
    """`pivot_table` as aligned text for the terminal."""
    return format_rows(pivot_table(result))


def winner_line(rows: list[Candidate]) -> str:
    """How the best-ranked row compares with the user's prompt (the baseline row), in one line."""
    best, base = rows[0], next(r for r in rows if r.baseline)
    if best.baseline:
        return "Your own prompt scored best."
    return (f"The winner beats your prompt by {best.combined - base.combined:+.2f} of 5 ({best.combined:.2f} against "
            f"{base.combined:.2f}, the mean of the three rubrics).")


def format_rows(rows: list[list[object]]) -> str:
    """Aligned columns, the prompt last; the judge's reason, where there is one, on the line below its row."""
    widths = [5, 8, 9, 9, 10, 8]
    lines = ["  ".join(h.rjust(w) for h, w in zip(TABLE_HEADERS, widths, strict=False)) + "  prompt"]
    for row in rows:
        lines.append("  ".join(str(v).rjust(w) for v, w in zip(row, widths, strict=False)) + f"  {row[-1]}")
        if row[-2]:
            lines.append(" " * 7 + f"judge: {row[-2]}")
    return "\n".join(lines)
