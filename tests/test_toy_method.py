"""The method on the committed toy world, measured by the analytic truth (not by the VLM it optimizes).

These run the evaluation harness's protocols (`pipelines/evaluate.py`) end to end on the CPU; EVALUATION.md
holds the same tables with the command that made them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines import evaluate, world
from pipelines.commands import evaluate as evaluate_cmd

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def horizon_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("horizon")
    # Three of EVALUATION.md's five lines (0.2, 0.5, 0.8), to keep the suite under eight minutes; the paper's method
    # against the toy preset's default steering (the preservation term, 4 judged views and the prompt's question).
    assert evaluate_cmd.main(["horizon", "--preset", "toy", "--variants", "method,keep-views-prompt", "--lines", "3",
                          "--out-dir", str(out)]) == 0
    return json.loads((out / "results.json").read_text())


def test_the_preservation_term_halves_the_horizon_distance_for_two_of_three_lines(horizon_results):
    # The paper's method alone brings the distance down but, against judge run 13 (which passes more stripes than
    # run 11 did), halves it at one line of three: it tiles the picture instead (EVALUATION.md, Table 6). With the
    # preservation term it moves the real horizon. With judge run 17 keep alone halved it at one line (0.5 missed
    # by 0.002: 0.067 against 0.131), so this checks the default the preset ships: keep, views, the prompt's question.
    rows = horizon_results["rows"]
    base, keep = rows["no control"]["per_target"], rows["method + keep-views-prompt"]["per_target"]
    halved = [line for line in base if keep[line] <= 0.5 * base[line]]
    assert len(halved) >= 2, (base, keep)
    assert rows["method"]["distance"] < rows["no control"]["distance"]
    assert all(r["steps"] <= 100 for r in horizon_results["runs"])


def test_the_preservation_term_keeps_the_prompts_scene_while_the_horizon_moves(horizon_results):
    rows = horizon_results["rows"]
    method, keep = rows["method"], rows["method + keep-views-prompt"]
    assert keep["scene_kept"] >= 8 and keep["scene_kept"] >= method["scene_kept"], (method, keep)
    assert keep["distance"] < 0.6 * rows["no control"]["distance"], keep
    assert keep["fooled"] <= method["fooled"] and keep["artefacts"] < method["artefacts"], (method, keep)
    # The table reports drift, fooled-judge and guard counts for both variants.
    assert {"scene_kept", "fooled", "guard_warned"} <= set(method) and {"scene_kept", "fooled"} <= set(keep)


def test_the_palette_distance_falls_for_at_least_two_presets(tmp_path):
    # Two of EVALUATION.md's three prompts (the same runs and seeds as its first eight), to keep the suite short.
    prompts = ";".join(evaluate.TOY_PROMPTS[:2])
    assert evaluate_cmd.main(["palette", "--preset", "toy", "--prompts", prompts, "--out-dir", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    base, method = rows["no control"]["per_target"], rows["method"]["per_target"]
    assert sum(method[p] < base[p] for p in base) >= 2, (base, method)


def test_the_app_on_toy_shows_the_horizon_meeting_the_drawn_line(tmp_path):
    """Through the app's own run: draw a line at 0.7 of the height, optimize, and the after image's analytic
    horizon is nearer the line than the before image's."""
    from PIL import Image

    from pipelines.presets import get_preset
    from studio import controls, gpu
    from studio.context import App
    from studio.tabs import visual_prompts

    generator, _ = gpu.models(get_preset("toy"))
    app = App(generator.preset, tmp_path)
    drawing = np.asarray(controls.get_control("horizon").render(
        controls.get_control("horizon").spec({"horizon_y": 0.7}, None, 512), (512, 512)))
    updates = list(visual_prompts.optimize(app, "a beach at noon", 3, "horizon", {"layers": [drawing]}, "", 60,
                                           visual_prompts.setting_defaults(), progress=lambda *a, **k: None))
    before, after = updates[-1]["slider"]
    d_before = abs(world.horizon_of(before.resize((112, 112), Image.NEAREST))[0] - 0.7)
    d_after = abs(world.horizon_of(after.resize((112, 112), Image.NEAREST))[0] - 0.7)
    assert d_after < d_before and d_after < 0.1, (d_before, d_after)
