"""A new visual prompt is one class (here, in this test file) plus one registry entry: the CLI, the app and the
examples pick it up without any other change."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
from PIL import Image

import overlays
from overlays.base import Control, Example, Input, MissingValues
from overlays.common import with_suffix
from pipelines import lora
from pipelines.commands import optimize as optimize_cmd


class Stripes(Control):
    """A throwaway control: n red vertical stripes."""

    name = "stripes"
    question = with_suffix("Does the image have vertical stripes like the red ones?")
    inputs = (Input("stripes_n", "slider", "Stripes", flag="stripes", default=3, minimum=1, maximum=8),)

    def spec(self, values: Mapping[str, object], layer: np.ndarray | None, resolution: int) -> int:
        n = values.get("stripes_n")
        if n is None:
            raise MissingValues(self.name, ["stripes_n"], "say how many stripes")
        if not 1 <= int(n) <= 8:
            raise ValueError(f"stripes {n!r} must be from 1 to 8")
        return int(n)

    def render(self, spec: int, size: tuple[int, int]) -> Image.Image:
        layer = np.zeros((size[1], size[0], 4), np.uint8)
        for i in range(spec):
            x = (2 * i + 1) * size[0] // (2 * spec)
            layer[:, x:x + 2] = (255, 0, 0, 255)
        return Image.fromarray(layer, "RGBA")

    def questions(self, spec: int) -> list[tuple[str, str]]:
        return [(self.question, "Yes")]

    def describe(self, spec: int) -> str:
        return f"{spec} red stripes"

    def example(self) -> Example:
        return Example("a green field", 7, values={"stripes_n": 3})


@pytest.fixture
def stripes(monkeypatch):
    monkeypatch.setitem(overlays.CONTROLS, "stripes", Stripes())  # the one registry line


def run(argv, capsys):
    try:
        code = optimize_cmd.main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_the_cli_takes_a_new_control_and_its_flags(stripes, tmp_path, capsys):
    out = tmp_path / "s.safetensors"
    code, err = run(["--preset", "tiny", "--prompt", "a green field", "--control", "stripes", "--stripes", "4",
                     "--steps", "1", "--eval-seeds", "0", "--out", str(out)], capsys)
    assert code in (0, None), err
    meta = lora.lora_metadata(out)
    assert meta["overlay"] == "4 red stripes" and meta["questions"][0][0] == Stripes.question
    code, err = run(["--preset", "tiny", "--prompt", "a", "--control", "stripes", "--out", str(out)], capsys)
    assert code == 2 and "--control stripes needs --stripes" in err


def test_without_the_registry_line_the_cli_refuses_it(tmp_path, capsys):
    code, err = run(["--preset", "tiny", "--prompt", "a", "--control", "stripes", "--out", str(tmp_path / "x")],
                    capsys)
    assert code == 2 and "stripes" in err


def test_the_app_lists_the_new_control_with_its_settings(stripes, tmp_path):
    import gradio as gr

    import studio
    from pipelines.presets import get_preset
    from studio.context import App
    from studio.tabs import visual_prompts

    demo = studio.build_demo("tiny", output_dir=tmp_path)
    radios = [b for b in demo.blocks.values() if isinstance(b, gr.Radio) and b.elem_id == "control"]
    assert "stripes" in [c[0] if isinstance(c, tuple) else c for c in radios[0].choices]
    assert "stripes_n" in visual_prompts.setting_keys()
    app = App(get_preset("tiny"), tmp_path)
    image, note = visual_prompts.preview(app, None, "stripes", None, "", {"stripes_n": 2})
    assert "2 red stripes" in note and "vertical stripes" in note
    assert np.asarray(image)[:, :, 0].max() == 255  # the red stripes are in what the VLM sees
    assert "Draw" not in visual_prompts.canvas_hint(app, "stripes")  # not a drawn control


def test_one_declaration_gives_the_cli_flag_and_the_app_setting(stripes, capsys):
    """A control declares each input once; its flag (help from the label) and its app setting come from it."""
    from studio.tabs import visual_prompts

    with pytest.raises(SystemExit):
        optimize_cmd.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--stripes STRIPES stripes: Stripes" in help_text
    assert "stripes_n" in visual_prompts.setting_keys()
    for control in overlays.CONTROLS.values():
        assert all(f"--{entry.flag}" in help_text for entry in control.flags)
    # An input the app does not show is still a flag, and one the app shows can have a flag too.
    assert "--palette-image" in help_text and "palette_image" not in visual_prompts.setting_keys()
    assert "--contrast" in help_text and "depth_contrast" in visual_prompts.setting_keys()


def test_the_cli_and_the_app_build_the_same_visual_prompt(tmp_path):
    """The CLI's flags and the app's settings go through the one `overlays.build`: the same values give the same
    pixels and questions, and a bad value is named the way each door names it."""
    from overlays.build import build
    from pipelines.commands import cli

    parser = cli.parser("test")
    cli.add_control_args(parser)
    parser.add_argument("--question", action="append")
    args = parser.parse_args(["--control", "palette", "--control", "depth", "--colors", "#ff0000 #00ff00",
                              "--a", "0.2,0.3", "--b", "0.7, 0.4", "--relation", "background", "--contrast"])
    overlay, questions, lines = cli.control_from_args(args, 112)
    app = build(["depth", "palette"], 112, {"palette_colors": "#ff0000 #00ff00", "point_a": "0.2, 0.3",
                                           "point_b": "0.7,0.4", "depth_relation": "background",
                                           "depth_contrast": True})
    assert np.array_equal(overlay, np.asarray(app.overlay)) and questions == app.questions
    assert lines == app.controls and len(questions) == 3  # palette + depth + its swapped question
    with pytest.raises(ValueError, match="^--a 'x' must be two numbers"):
        build(["depth"], 112, {"point_a": "x", "point_b": "0.5,0.5"}, cli=True)
    with pytest.raises(ValueError, match="^Point A 'x' must be two numbers"):
        build(["depth"], 112, {"point_a": "x", "point_b": "0.5,0.5"})
