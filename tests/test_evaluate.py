"""Early stopping, the prompt guard, and the evaluation harness (one process and two give the same table)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pipelines import evaluate, lora, optimize
from pipelines.commands import evaluate as evaluate_cmd
from pipelines.commands import optimize as optimize_cmd
from pipelines.optimize import TARGET_WINDOW, prompt_question, with_prompt_guard

ROOT = Path(__file__).resolve().parent.parent
QA = [("Is the horizon of the scene aligned with the red line? Answer with Yes or No.", "Yes")]


def test_early_stopping_ends_the_run_once_the_running_mean_passes(tiny_models):
    generator, vlm = tiny_models
    low = optimize.optimize(generator, vlm, "a beach", QA, steps=12, progress=False, target_p=1e-6, eval_seeds=0)
    assert low.reached_target and len(low.history) == TARGET_WINDOW
    high = optimize.optimize(generator, vlm, "a beach", QA, steps=12, progress=False, target_p=0.99, eval_seeds=0)
    assert not high.reached_target and len(high.history) == 12
    with pytest.raises(ValueError, match="target P 1.5 must be between 0 and 1"):
        optimize.optimize(generator, vlm, "a beach", QA, steps=2, target_p=1.5)


def test_keep_prompt_adds_the_prompts_own_question_once():
    guarded = with_prompt_guard(QA, "a beach at noon.")
    assert guarded == [*QA, ("Does this image show a beach at noon? Answer with Yes or No.", "Yes")]
    assert with_prompt_guard(guarded, "a beach at noon") == guarded
    assert prompt_question("  a   green field ") == "Does this image show a green field? Answer with Yes or No."


def run_cli(main, argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_keep_prompt_and_target_p(tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    code, stdout, err = run_cli(optimize_cmd.main, ["--preset", "tiny", "--prompt", "a beach", "--control", "horizon",
                                                "--y", "0.4", "--steps", "9", "--keep-prompt", "--target-p", "1e-6",
                                                "--eval-seeds", "0", "--out", str(out)], capsys)
    assert code in (0, None), err
    assert f"stopped early at step {TARGET_WINDOW}" in stdout
    meta = lora.lora_metadata(out)
    assert meta["questions"][-1] == ["Does this image show a beach? Answer with Yes or No.", "Yes"]
    assert meta["steps"] == TARGET_WINDOW and meta["reached_target"] is True
    code, _, err = run_cli(optimize_cmd.main, ["--preset", "tiny", "--prompt", "a beach", "--question", "Is it?",
                                           "--target-p", "most", "--out", str(out)], capsys)
    assert code == 2 and "--target-p 'most' must be a number between 0 and 1, or 'off'" in err


def test_the_horizon_plan_is_table_6(tmp_path):
    runs = evaluate.plan("horizon", evaluate.TOY_PROMPTS, [0.2, 0.35, 0.5, 0.65, 0.8], ["method", "keep-prompt"])
    assert len(runs) == 30 and [r.index for r in runs] == list(range(30))
    method = [r for r in runs if not r.keep_prompt]
    guarded = [r for r in runs if r.keep_prompt]
    # The two variants of one (prompt, line) share their seed: the same noise and the same unseen seeds.
    assert [(r.prompt, r.target, r.seed) for r in method] == [(r.prompt, r.target, r.seed) for r in guarded]
    assert len({r.seed for r in method}) == 15
    assert guarded[0].variant == "method + keep-prompt" and guarded[0].options == evaluate.PAPER


def test_the_steering_variants_pass_their_options_and_an_unknown_one_is_named():
    runs = evaluate.plan("horizon", ["a beach"], [0.3], list(evaluate.VARIANTS))
    by_key = {r.key: r for r in runs}
    assert by_key["views"].options == {"views": 4, "noises": 1, "keep": 0.0} and not by_key["views"].keep_prompt
    assert by_key["method"].options == {"views": 0, "noises": 1, "keep": 0.0}  # the paper's, whatever the preset
    assert by_key["all"].keep_prompt and by_key["all"].options == {"views": 4, "noises": 2, "keep": 5.0}
    assert len({r.seed for r in runs}) == 1  # paired: every variant sees the same noise
    with pytest.raises(ValueError, match="unknown variant 'magic'; available: method, keep-prompt"):
        evaluate.plan("horizon", ["a beach"], [0.3], ["magic"])


def test_draw_picks_lines_prompts_and_seeds_no_tuning_used():
    from pipelines import world

    lines, prompts, first = evaluate.drawn(11, 5, tuple(world.SCENES))
    assert (lines, prompts, first) == evaluate.drawn(11, 5, tuple(world.SCENES))  # reproducible from its seed
    assert len(lines) == 5 and all(0.15 <= x <= 0.85 for x in lines) and lines != list(evaluate.LINES)
    assert len(set(prompts)) == 3 and set(prompts) <= set(world.SCENES)
    other = evaluate.drawn(12, 5, tuple(world.SCENES))
    assert other[0] != lines and other[2] != first
    runs = evaluate.plan("horizon", prompts, lines, first_seed=first)
    assert min(r.seed for r in runs) == first >= 10**6  # far from the fixed protocol's seeds 0..14


def test_a_plugged_in_estimator_is_used(monkeypatch, tmp_path):
    module = tmp_path / "my_estimator.py"
    module.write_text("def horizon(image):\n    return 0.25\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    estimator = evaluate.load_estimator("my_estimator:horizon")
    assert estimator(Image.new("RGB", (8, 8))) == 0.25
    with pytest.raises(ValueError, match="estimator 'nope' must be 'analytic' or 'module:function'"):
        evaluate.load_estimator("nope")
    with pytest.raises(ValueError, match="estimator 'my_estimator:missing' cannot be loaded"):
        evaluate.load_estimator("my_estimator:missing")


ARGS = ["horizon", "--preset", "tiny", "--prompts", "a beach at noon", "--lines", "2", "--seeds", "2", "--steps",
        "2", "--keep-prompt", "--threads", "1"]


@pytest.mark.slow  # two process launches
def test_two_accelerate_processes_write_the_same_table_as_one(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    one = subprocess.run([sys.executable, "-m", "pipelines.evaluate", *ARGS, "--out-dir", str(tmp_path / "one")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    # accelerate's --cpu launcher needs MPI for several processes; its torchrun launcher works on CPUs too.
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                          "-m", "pipelines.evaluate", *ARGS, "--out-dir", str(tmp_path / "two")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    first, second = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert (first["processes"], second["processes"]) == (1, 2)
    assert "[1] run" in two.stdout  # the second process did runs of its own
    assert (tmp_path / "one" / "table.md").read_text() == (tmp_path / "two" / "table.md").read_text()
    assert first["rows"] == second["rows"]
    assert [r["distance_after"] for r in first["runs"]] == [r["distance_after"] for r in second["runs"]]
    rows = first["rows"]
    assert list(rows) == ["no control", "method", "method + keep-prompt"]
    assert Image.open(tmp_path / "one" / "contact-sheet.png").size[0] > 2 * 112


def test_bad_evaluation_options_are_one_line(tmp_path, capsys):
    code, _, err = run_cli(evaluate_cmd.main, ["palette", "--preset", "tiny", "--palettes", "ocean,nope",
                                           "--out-dir", str(tmp_path)], capsys)
    assert code == 2 and "unknown palette preset 'nope'" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli(evaluate_cmd.main, ["horizon", "--preset", "tiny", "--out-dir", str(tmp_path / "file")],
                           capsys)
    assert code == 2 and "is a file, not a folder" in err
    code, _, err = run_cli(evaluate_cmd.main, ["horizon", "--preset", "tiny", "--draw", "-1", "--out-dir",
                                           str(tmp_path / "d")], capsys)
    assert code == 2 and "--draw -1 must be >= 0" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(evaluate_cmd.main, ["horizon", "--preset", "tiny", "--variants", "method,magic", "--out-dir",
                                           str(tmp_path / "v")], capsys)
    assert code == 2 and "unknown variant 'magic'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(evaluate_cmd.main, ["horizon", "--preset", "tiny", "--budget", "0", "--out-dir",
                                           str(tmp_path / "b")], capsys)
    assert code == 2 and "--budget 0.0 must be from 0 to 3600 seconds" in err


def test_an_ablation_at_equal_wall_clock_writes_a_row_per_variant(tmp_path, capsys):
    args = ["horizon", "--preset", "tiny", "--prompts", "a beach", "--lines", "1", "--seeds", "2", "--steps", "500",
            "--variants", "method,views,all", "--budget", "1.5", "--threads", "1", "--out-dir", str(tmp_path)]
    code, out, _ = run_cli(evaluate_cmd.main, args, capsys)
    assert code == 0
    record = json.loads((tmp_path / "results.json").read_text())
    assert list(record["rows"]) == ["no control", "method", "method + views", "method + all"]
    steps = {r["run"]["key"]: r["steps"] for r in record["runs"]}
    assert all(1 <= s < 500 for s in steps.values()) and steps["all"] < steps["method"]  # the budget, not the cap
    assert record["rows"]["method + all"]["guard_warned"] in (0, 1)
    assert "| method + views |" in (tmp_path / "table.md").read_text()


def test_kept_the_rest_is_what_the_control_did_not_ask_about():
    from pipelines import world

    def reading(**changes):
        base = world.read(world.render(world.Scene("a green field", "noon", 0.6, tree="left", tree_x=0.25, seed=3)))
        return dataclasses.replace(base, **changes)

    before = reading()
    assert before.tree == "left"
    # a palette run: the horizon belongs to the rest; a horizon run is asked to move it
    assert evaluate.rest_kept(before, reading(horizon=before.horizon + 0.03), "palette")
    assert not evaluate.rest_kept(before, reading(horizon=before.horizon + 0.2), "palette")
    assert evaluate.rest_kept(before, reading(horizon=before.horizon + 0.2), "horizon")
    # things the prompt did not ask about: a tree lost or moved, clouds or a sun appearing
    assert not evaluate.rest_kept(before, reading(tree=None), "horizon")
    assert not evaluate.rest_kept(before, reading(tree="right"), "palette")
    assert not evaluate.rest_kept(before, reading(clouds=not before.clouds), "horizon")
    assert not evaluate.rest_kept(before, reading(body="sun"), "palette")
    # colours are a palette's to change
    assert evaluate.rest_kept(before, reading(scene="a lavender field", time="sunset"), "palette")
