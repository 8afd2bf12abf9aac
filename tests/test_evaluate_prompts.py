"""The prompt half measured against the toy world's truth: held-out prompts, best-of-N, pivots, recreation, DPO."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines import evaluate_prompts, world
from pipelines.commands import evaluate as evaluate_cmd
from pipelines.evaluate_prompts import Scored, best_of, held_out, refine_summary
from tests.test_evaluate import run_cli


def test_held_out_prompts_are_every_scene_alone_and_drawn_combinations():
    prompts = held_out(2026)
    assert prompts[:len(world.SCENES)] == list(world.SCENES)
    combos = prompts[len(world.SCENES):]
    assert len(combos) == evaluate_prompts.COMBINATIONS and len(set(combos)) == len(combos)
    for prompt in combos:  # a scene and one or two attributes, all words of the grammar
        named = world.parse(prompt)
        assert named["scene"] in world.SCENES and 2 <= len(named) <= 3, prompt
    assert held_out(2026) == prompts and held_out(7)[len(world.SCENES):] != combos  # drawn from the seed
    train = evaluate_prompts.training_prompts(2026, 10)
    assert len(set(train)) == 10 and not set(train) & set(prompts)


def test_the_truth_is_the_mix_the_judge_was_taught():
    # combined = mean(aesthetic, 5 * alignment, (aesthetic + 5 * alignment) / 2)
    a, al = 3.2, 0.5
    assert world.preference(a, al) == pytest.approx(np.mean([a, 5 * al, (a + 5 * al) / 2]))
    image = world.render(world.sample(np.random.default_rng(1), {"scene": "a lake"}))
    got = world.scores(image, "a lake, the moon")
    assert got["preference"] == pytest.approx(world.preference(got["aesthetic"], got["alignment"]))


def rows(*pairs: tuple[float, float]) -> list[Scored]:
    """Rewrites with (judged, aesthetic), all aligned."""
    return [Scored(f"p{i}", j, a, 1.0) for i, (j, a) in enumerate(pairs)]


def test_best_of_n_takes_the_judges_favourite_among_the_first_n():
    candidates = rows((4.0, 2.0), (4.5, 3.0), (3.0, 4.5), (4.9, 1.0))
    judged, oracle = best_of(candidates, 3)
    assert (judged.prompt, oracle.prompt) == ("p1", "p2")
    assert best_of(candidates, 1) == (candidates[0], candidates[0])


def test_the_refine_summary_says_what_the_judge_gains_over_the_raw_prompt_and_over_chance():
    # A judge that always picks the worst image: its gain is below a random pick's, and it never picks the best.
    worst_first = rows(*[(5 - i / 10, 1.0 + i / 5) for i in range(16)])
    case = evaluate_prompts.RefineCase("a beach", 0, Scored("a beach", 3.0, 2.0, 1.0), worst_first)
    summary = refine_summary([case])
    assert summary["aesthetic_gain_best_of_8"] == pytest.approx(-1.0)
    assert summary["random_aesthetic_gain_best_of_8"] == pytest.approx(np.mean([1.0 + i / 5 for i in range(8)]) - 2)
    assert summary["oracle_aesthetic_gain_best_of_8"] == pytest.approx(1.0 + 7 / 5 - 2)
    assert summary["judge_accuracy"] == [0.0]
    assert summary["best_of"]["8"]["generations"] == 9
    assert summary["best_of"]["8"]["chance_of_analytic_best"] == pytest.approx(1 / 8)
    table = evaluate_prompts.refine_table(summary)
    assert "| raw prompt | 1 | 2.00 |" in table and "| 8 | 9 | 1.00 |" in table
    assert "best_of_8_by_score" not in summary or not summary["best_of_8_by_score"]  # no scores recorded


def test_the_best_of_8_by_each_judge_signal_says_which_one_carries_the_truth():
    # VQAScore follows the truth, the aesthetic rubric does the opposite
    candidates = [Scored(f"p{i}", 4.0, 1.0 + i / 5, 1.0, {"aesthetic": 5 - i / 5, "vqa": i / 10}) for i in range(16)]
    case = evaluate_prompts.RefineCase("a beach", 0, Scored("a beach", 3.0, 2.0, 1.0), candidates)
    picks = refine_summary([case])["best_of_8_by_score"]
    assert picks["vqa"]["aesthetic"] == pytest.approx(1.0 + 7 / 5) and picks["aesthetic"]["aesthetic"] == 1.0
    table = evaluate_prompts.refine_table(refine_summary([case]))
    assert "| VQAScore | 2.40 |" in table and "| aesthetic rubric | 1.00 |" in table


def test_agreement_counts_the_originals_attributes_the_copy_shows():
    rng = np.random.default_rng(0)
    same = world.read(world.render(world.sample(rng, {"scene": "a lake", "time": "noon", "tree": "left"})))
    other = world.read(world.render(world.sample(rng, {"scene": "a desert", "time": "night"})))
    assert evaluate_prompts.agreement(same, same) == 1.0
    assert evaluate_prompts.agreement(same, other) < 0.5


def test_a_preset_without_analytic_truth_is_refused_in_one_line(tmp_path, capsys):
    code, _, err = run_cli(evaluate_cmd.main, ["refine", "--preset", "tiny", "--out-dir", str(tmp_path)], capsys)
    assert code == 2 and "preset 'tiny' has no analytic truth" in err and "Traceback" not in err
    code, _, err = run_cli(evaluate_cmd.main, ["dpo", "--preset", "toy", "--rounds", "9", "--out-dir", str(tmp_path)],
                           capsys)
    assert code == 2 and "--rounds 9 must be a whole number from 1 to 5" in err


@pytest.mark.slow  # generates and judges 17 images per case on the toy world
def test_refine_and_recreate_write_results_tables_and_sheets(tmp_path, capsys):
    out = tmp_path / "refine"
    code, stdout, err = run_cli(evaluate_cmd.main, ["refine", "--preset", "toy",
                                                    "--prompts", "a beach;a lake, the moon",
                                                "--seeds", "1", "--out-dir", str(out)], capsys)
    assert code == 0, err
    record = json.loads((out / "results.json").read_text())
    summary = record["summary"]
    assert set(summary["best_of"]) == {"1", "4", "8", "16"} and summary["cases"] == 2
    assert isinstance(summary["aesthetic_gain_best_of_8"], float) and len(summary["judge_accuracy"]) == 1
    assert len(record["cases"][0]["rewrites"]) == 16  # the toy VLM writes 16 distinct rewrites of "a beach"
    assert "| best of N |" in (out / "table.md").read_text() and (out / "contact-sheet.png").stat().st_size > 0
    out = tmp_path / "recreate"
    code, _, err = run_cli(evaluate_cmd.main, ["recreate", "--preset", "toy", "--images", "3", "--out-dir", str(out)],
                           capsys)
    assert code == 0, err
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert 0 <= summary["recreate_attribute_agreement"] <= 1 and summary["cases"] == 3


@pytest.mark.slow  # a round of pairs, DPO on the toy VLM and two measurements
def test_one_dpo_round_measures_both_rounds_and_saves_the_lora(tmp_path, capsys):
    code, _, err = run_cli(evaluate_cmd.main, ["dpo", "--preset", "toy", "--rounds", "1", "--train-prompts", "2",
                                           "--prompts", "a beach", "--seeds", "1", "--out-dir", str(tmp_path)], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert len(summary["judge_accuracy"]) == 2 and len(summary["sample_aesthetic"]) == 2
    assert summary["dpo_sample_gain"] == pytest.approx(summary["sample_aesthetic"][1] - summary["sample_aesthetic"][0])
    assert (tmp_path / "vlm-lora-round1" / "adapter_config.json").is_file()
