"""The interface every visual prompt implements, and the data it declares for the CLI and the app.

A control is one module: a validating `Spec`, `render`, `questions`, `describe`, and a `Control` subclass that
says how a Spec comes from values (the app's settings or the CLI's flags, and for drawn controls the canvas),
its inputs (each declared once: the app's setting and the CLI's flag are read from it) and its example.
`overlays.CONTROLS` lists them; the CLI, the app and the examples read only that registry (and build through
`overlays.build`), so a new control is one new module plus one line there.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

QA = tuple[str, str]


@dataclass(frozen=True)
class Input:
    """One input of a control, declared once: the app shows it as a component of `kind`, the CLI as `--<flag>`.

    Attributes:
        key: the name `Control.spec` reads from its values (also the app endpoint's parameter name).
        kind: "colors" (a palette editor; text on the CLI), "slider" (whole numbers when `default` is whole),
            "dropdown" or "radio" (one of `choices`), "checkbox", "image" (a file), "number" (a box that may be
            left empty: None) or "point" ('x, y' fractions as text, empty: None).
        label: what the page shows, and the CLI's help.
        flag: the CLI's `--<flag>`; None when the input is the app's only.
        app: False when the input is the CLI's only.
        hint: an example or a rule, shown under the box and in the help.
        default: the page's starting value. The CLI passes only what was typed (an absent flag is None), so a
            Spec's own fallbacks apply there, and a value the page pre-fills is never forced on the CLI.
        choices: for "dropdown" and "radio".
        minimum, maximum: for "slider" and "number"; `maximum` may be a function of the generator's resolution.
        sets_questions: a change rewrites the questions box with `Control.default_questions`.
    """

    key: str
    kind: str
    label: str
    flag: str | None = None
    app: bool = True
    hint: str = ""
    default: object = None
    choices: tuple[str, ...] = ()
    minimum: float = 0
    maximum: float | Callable[[int], float] = 1
    sets_questions: bool = False

    @property
    def name(self) -> str:
        """The label without its parenthesis: how a message in the app names this input."""
        return self.label.split(" (")[0]

    @property
    def dest(self) -> str:
        """The argparse attribute of the flag."""
        return (self.flag or self.key).replace("-", "_")

    def max_for(self, resolution: int) -> float:
        return self.maximum(resolution) if callable(self.maximum) else self.maximum

    def flag_type(self) -> type:
        """What argparse converts the flag's text to (points and files are read by `overlays.build`)."""
        if self.kind == "number" or (self.kind == "slider" and not isinstance(self.default, int)):
            return float
        return int if self.kind == "slider" else str


@dataclass
class Example:
    """A ready-made use of a control: the app's precomputed examples and the README's pictures."""

    prompt: str
    seed: int
    values: dict[str, object] = field(default_factory=dict)
    drawing: Image.Image | None = None  # what a user would paint on the canvas (RGBA, any size)
    questions: list[str] = field(default_factory=list)  # the questions box, when the control reads it


class Control(ABC):
    """A visual prompt. Subclasses set the class attributes and implement `spec`.

    Attributes:
        name: the registry key, CLI value (`--control name`) and the app's label.
        question: the paper's question for this prompt, ending "Answer with Yes or No.".
        drawn: what a user paints on the canvas for it, or None if it is not read from the canvas.
        uses_questions: its questions are the user's own (values["questions"]), not added to them.
        changes: what it asks the picture to change, "layout" or "colours": the preservation term
            (`pipelines.steering.keep_loss`) holds the rest.
        inputs: every input, declared once; `settings` (the app's) and `flags` (the CLI's) are read from it.
    """

    name: str
    question: str = ""
    drawn: str | None = None
    uses_questions: bool = False
    changes: str = "layout"
    inputs: tuple[Input, ...] = ()

    @property
    def settings(self) -> tuple[Input, ...]:
        """The inputs the app shows, in declaration order."""
        return tuple(i for i in self.inputs if i.app)

    @property
    def flags(self) -> tuple[Input, ...]:
        """The inputs the CLI takes as `--<flag>`."""
        return tuple(i for i in self.inputs if i.flag)

    # --- what each control module provides ------------------------------------------------------------
    @abstractmethod
    def spec(self, values: Mapping[str, object], layer: np.ndarray | None, resolution: int) -> object:
        """A validated Spec from `values` (settings or flags by key, plus "questions": the questions box's
        questions) and, for drawn controls, the painted `layer` ((H, W, 4) uint8 at any size, or None when
        nothing was painted). Bad or missing input raises ValueError naming the value."""

    @abstractmethod
    def render(self, spec: object, size: tuple[int, int]) -> Image.Image:
        """The RGBA visual prompt at `size` (alpha 0 where nothing is drawn)."""

    @abstractmethod
    def questions(self, spec: object) -> list[QA]:
        """The (question, expected answer) pairs the VLM is asked."""

    @abstractmethod
    def describe(self, spec: object) -> str:
        """One line for file metadata."""

    @abstractmethod
    def example(self) -> Example:
        """A representative use (prompt, seed, settings, drawing)."""

    # --- with defaults ----------------------------------------------------------------------------------
    def notes(self, spec: object, size: tuple[int, int]) -> list[str]:
        """Messages for the user about this spec at this size (e.g. a resize)."""
        return []

    def spec_notes(self, values: Mapping[str, object], layer: np.ndarray | None, resolution: int) -> list[str]:
        """Messages about how the values were read (e.g. a line weight measured from the stroke)."""
        return []

    def bottom_rows(self, spec: object, size: tuple[int, int]) -> int:
        """Rows at the bottom edge this control's mark takes (0: it is not docked there). Several docked controls
        in one overlay are stacked upwards in registry order (see `overlays.layout`)."""
        return 0

    def lifted(self, spec: object, rows: int) -> object:
        """The spec with its docked mark moved up by `rows` pixels, to sit above another docked mark."""
        if rows:
            raise ValueError(f"the {self.name} overlay cannot be moved up to make room for another")
        return spec

    def default_questions(self, values: Mapping[str, object]) -> list[QA]:
        """What the app's questions box starts with for this control."""
        return [(self.question, "Yes")]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """This control's flags, in a group of their own; each flag's help is its input's label and hint."""
        if not self.flags:
            return
        group = parser.add_argument_group(f"--control {self.name}")
        for flag in self.flags:
            help_text = f"{self.name}: {flag.label}" + (f"; {flag.hint}" if flag.hint else "")
            if flag.kind == "checkbox":
                group.add_argument(f"--{flag.flag}", dest=flag.dest, action="store_true", default=None,
                                   help=help_text)
                continue
            group.add_argument(f"--{flag.flag}", dest=flag.dest, type=flag.flag_type(), default=None,
                               choices=list(flag.choices) or None, help=help_text)


def pair(text: str, what: str = "point") -> tuple[float, float]:
    """'0.3,0.6' -> (0.3, 0.6), for a "point" flag or setting; `what` names the value in the error."""
    try:
        x, y = (float(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"{what} {text!r} must be two numbers separated by a comma, e.g. 0.3,0.6") from None
    return x, y


def blank(layer: np.ndarray | None) -> bool:
    """True when nothing was painted (no layer, or every alpha 0)."""
    return layer is None or not bool((np.asarray(layer)[..., 3] > 0).any())


class MissingValues(ValueError):
    """A control lacks values it needs; `keys` name them (the CLI turns them into its flags, the app into what
    to draw or fill in)."""

    def __init__(self, control: str, keys: list[str], message: str):
        super().__init__(message)
        self.control, self.keys = control, keys
