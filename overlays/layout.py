"""Several visual prompts in one overlay: docked marks stacked, every mark checked against the others.

An artist asks for "the horizon at a third AND this palette": each control renders its own layer, the marks that
sit on the bottom edge (the palette strip, the line-weight stroke) are stacked upwards in registry order, and two
marks that would cover the same pixels are refused with a message naming both, never drawn over each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .base import QA, Control

GAP = 0.02  # space between two stacked bottom marks, as a fraction of the height


@dataclass
class Layout:
    """The combined overlay (RGBA at `size`), every control's questions, and one line per control."""

    overlay: Image.Image
    questions: list[QA]
    descriptions: list[str]
    specs: list[object] = field(default_factory=list)  # as placed (a docked mark may have been lifted)


def stacked(parts: list[tuple[Control, object]], size: tuple[int, int]) -> list[object]:
    """The specs with each docked mark lifted above the docked marks before it."""
    rows, out = 0, []
    for control, spec in parts:
        if control.bottom_rows(spec, size):
            spec = control.lifted(spec, rows)
            rows = control.bottom_rows(spec, size) + max(1, round(GAP * size[1]))
        out.append(spec)
    return out


def clashes(layers: list[tuple[str, np.ndarray]]) -> list[str]:
    """One message per pair of layers whose drawn pixels (alpha > 0) overlap."""
    out = []
    for i, (a, first) in enumerate(layers):
        for b, second in layers[i + 1:]:
            both = (first[..., 3] > 0) & (second[..., 3] > 0)
            if both.any():
                ys, xs = np.nonzero(both)
                h, w = both.shape
                out.append(f"the {a} and {b} overlays overlap ({int(both.sum())} pixels around x={xs.mean() / w:.2f}, "
                           f"y={ys.mean() / h:.2f} of the image): move one of them, or use them in separate runs")
    return out


def combine(parts: list[tuple[Control, object]], size: tuple[int, int]) -> Layout:
    """One overlay from several (control, spec) pairs, in the order given (the registry's, for stacking).

    Raises ValueError when a control appears twice or two marks overlap, naming them.
    """
    names = [c.name for c, _ in parts]
    if not parts:
        raise ValueError("no visual prompt to draw: choose at least one control")
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"the {twice} control is asked for twice; each control can be used once per run")
    specs = stacked(parts, size)
    layers = [(c.name, np.asarray(c.render(spec, size).convert("RGBA"))) for (c, _), spec in zip(parts, specs,
                                                                                                  strict=True)]
    problems = clashes(layers)
    if problems:
        raise ValueError(problems[0])
    overlay = np.zeros_like(layers[0][1])
    for _, layer in layers:  # no two layers share a drawn pixel, so each pixel comes from at most one
        drawn = layer[..., 3] > 0
        overlay[drawn] = layer[drawn]
    questions: list[QA] = []
    for (control, _), spec in zip(parts, specs, strict=True):
        questions += [qa for qa in control.questions(spec) if qa not in questions]
    return Layout(Image.fromarray(overlay, "RGBA"), questions,
                  [c.describe(spec) for (c, _), spec in zip(parts, specs, strict=True)], specs)
