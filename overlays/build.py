"""One way to build visual prompts from plain values, for the CLI and the app alike.

The CLI hands its flags' text, the app its components' values; both call `build` with them by input key. Text is
read here, once, by the input's kind (a point's 'x, y', a number typed in a box, an image file opened under our
own limits), so a value means the same thing whichever door it came through. Only the wording of a message
differs: the CLI names `--flags`, the app its settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.checks import read_image

from . import CONTROLS, canvas, layout
from .base import QA, Control, Input, MissingValues, pair


@dataclass
class Built:
    """The visual prompt as the VLM sees it.

    Attributes:
        name: the control's name, or "a + b" when several are combined.
        spec: its Spec, or a list of Specs (as placed) when several.
        overlay: RGBA at the generator's resolution: exactly what is drawn over the image.
        questions: every (question, expected answer) pair, without repeats.
        description: one line.
        notes: what the user should know about how the values were read (a resize, a measured stroke).
        controls: one line per control when several are combined.
        added: the questions of the controls combined with the canvas's (asked beside a questions box's own).
    """

    name: str
    spec: object
    overlay: Image.Image
    questions: list[QA]
    description: str
    notes: list[str] = field(default_factory=list)
    controls: list[str] | None = None
    added: list[QA] = field(default_factory=list)


def get_control(name: str) -> Control:
    if name not in CONTROLS:
        raise ValueError(f"control {name!r} is not one of {', '.join(CONTROLS)}")
    return CONTROLS[name]


def drawn_layer(drawing: object) -> np.ndarray | None:
    """The painted layer of an ImageEditor value (or a layer list / array), None when nothing is painted."""
    if drawing is None or canvas.is_blank(drawing):
        return None
    return canvas.as_layer(drawing)


def called(entry: Input, cli: bool) -> str:
    """How a message names an input: its flag on the CLI, its label in the app."""
    return f"--{entry.flag}" if cli and entry.flag else entry.name


def read_value(entry: Input, raw: object, cli: bool = False) -> object:
    """One input's value from what was typed or uploaded: empty boxes are None, 'x, y' text a pair, a number box's
    text a float, an image path the opened image. Anything else is passed on for the Spec to check."""
    what = called(entry, cli)
    if entry.kind in ("point", "number", "image") and (raw is None or not str(raw).strip()):
        return None
    if entry.kind == "image" and isinstance(raw, (str, Path)):
        return read_image(raw, "RGBA", what=what, name=Path(raw).name)
    if entry.kind == "point" and isinstance(raw, str):
        return pair(raw, what)
    if entry.kind == "number" and isinstance(raw, str):
        try:
            return float(raw.strip())
        except ValueError:
            raise ValueError(f"{what} {raw.strip()!r} is not a number") from None
    return raw


def one(name: str, resolution: int, values: Mapping[str, object], *, drawing: object = None,
        questions: Sequence[str] = (), combined: bool = False, cli: bool = False) -> Built:
    """One control from its values (by input key) and, for a drawn control that is not `combined`, the canvas."""
    control = get_control(name)
    layer = drawn_layer(drawing) if control.drawn and not combined else None
    read = {"questions": list(questions)}
    try:
        read |= {i.key: read_value(i, values.get(i.key), cli) for i in control.inputs}
        spec = control.spec(read, layer, resolution)
    except MissingValues as exc:
        names = {i.key: called(i, cli) for i in control.inputs}
        wanted = [names.get(k, k) for k in exc.keys]
        if cli:
            raise ValueError(f"--control {name} needs {' or '.join(wanted)}") from None
        if not combined:
            raise
        raise ValueError(f"combined control {name} needs {' and '.join(wanted)} in its settings (the canvas is the "
                         "Control's)") from None
    except ValueError as exc:
        if cli or not combined:
            raise
        raise ValueError(f"combined control {name}: {exc}") from None
    size = (resolution, resolution)
    notes = control.spec_notes(read, layer, resolution) + control.notes(spec, size)
    return Built(name, spec, control.render(spec, size), control.questions(spec), control.describe(spec), notes)


def build(names: Sequence[str], resolution: int, values: Mapping[str, object], *, drawing: object = None,
          questions: Sequence[str] = (), cli: bool = False) -> Built:
    """The visual prompt of one or several controls, in one overlay at the generator's resolution.

    Args:
        names: the controls; the first owns the canvas (`drawing`), the others are set by their values alone.
            Several are laid out by `overlays.layout.combine` in registry order; marks that would overlap are
            refused, naming both.
        resolution: the generator's side in pixels.
        values: raw values by input key (text as typed, a file path, a number, a checkbox's bool); missing keys
            are None.
        drawing: what was painted on the canvas (an ImageEditor value, a layer list or an RGBA array), or None.
        questions: the user's own questions, for a control that asks them.
        cli: word messages for the command line (`--flags`) rather than the app (settings).

    Raises ValueError naming the value or flag; in the app, a lone control that lacks its values raises
    `MissingValues` (the page says what to draw or fill in).
    """
    if not names:
        raise ValueError("no visual prompt to draw: choose at least one control")
    twice = next((n for n in names if list(names).count(n) > 1), None)
    if twice:
        where = f"--control {twice} is given" if cli else f"the {twice} control is asked for"
        raise ValueError(f"{where} twice; each control can be used once per run")
    main = one(names[0], resolution, values, drawing=drawing, questions=questions, cli=cli)
    if len(names) == 1:
        return main
    others = [one(n, resolution, values, questions=questions, combined=True, cli=cli) for n in names[1:]]
    order = list(CONTROLS)
    built = sorted([main, *others], key=lambda b: order.index(b.name))
    placed = layout.combine([(CONTROLS[b.name], b.spec) for b in built], (resolution, resolution))
    added = [qa for b in others for qa in b.questions if qa not in main.questions]
    return Built(" + ".join(b.name for b in built), placed.specs, placed.overlay, placed.questions,
                 "; ".join(placed.descriptions), [n for b in built for n in b.notes], placed.descriptions,
                 list(dict.fromkeys(added)))
