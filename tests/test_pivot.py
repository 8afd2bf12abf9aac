"""Image-pivot refinement (PRIP): the pivot is the judge's favourite of K images, every refined prompt begins with
the user's prompt, the table holds baseline + pivot + N rows, bad input is refused in one line, and the
self-rewarding round writes (pivot image, system prompt) pairs. Tiny models, CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import checks, judge, refine, reports, self_reward
from pipelines.commands import refine as refine_cmd
from pipelines.commands import self_reward as self_reward_cmd

PROMPT = "a cat on a windowsill"


def distance(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


@pytest.fixture
def favourite_seed_judge(tiny_models, monkeypatch):
    """A stand-in judge that scores 4.5 on every rubric the image nearest to `generate(PROMPT, favourite)` and 1.0
    every other image; returns a function that sets the favourite seed."""
    generator, _ = tiny_models
    state = {}

    def favour(seed: int) -> None:
        state["image"] = generator.generate(PROMPT, seed)

    def is_favourite(image: Image.Image) -> bool:
        return distance(image, state["image"]) < 0.5  # the same seed's image, up to float noise in batching

    def continuous_scores(vlm, items):
        return [judge.Verdict(rubric, 4.5 if is_favourite(im) else 1.0) for im, rubric, _ in items]

    monkeypatch.setattr(judge, "continuous_scores", continuous_scores)
    monkeypatch.setattr(judge, "vqa_scores", lambda vlm, images, prompts: [0.5] * len(images))
    return favour


@pytest.mark.parametrize("favourite", [2, 1])
def test_the_pivot_is_the_judges_favourite_of_the_k_images(tiny_models, favourite_seed_judge, favourite, writing_vlm):
    """Not simply the first image: the judge prefers seed 5 + favourite, and that image is the pivot."""
    generator, _ = tiny_models
    seed = 5
    favourite_seed_judge(seed + favourite)
    assert distance(generator.generate(PROMPT, seed), generator.generate(PROMPT, seed + favourite)) > 5  # distinct
    result = refine.pivot(generator, tiny_models[1], PROMPT, n=2, pivots=4, image_seed=seed)
    assert [c.seed for c in result.pivots][0] == seed + favourite
    assert sorted(c.seed for c in result.pivots) == [5, 6, 7, 8]
    assert result.pivot.seed == seed + favourite and result.pivot.combined == pytest.approx(4.5)
    assert distance(result.pivot.image, generator.generate(PROMPT, seed + favourite)) < 0.5
    assert all(c.combined == pytest.approx(1.0) for c in result.pivots[1:])


def test_the_vlm_writes_from_the_pivot_image_and_every_prompt_begins_with_the_users(tiny_models, monkeypatch):
    generator, vlm = tiny_models
    seen = []
    replies = iter([
        ["A CAT ON A WINDOWSILL, golden hour, soft light",  # begins with it in another case: the user's spelling
         "tabby cat, bokeh, 35mm photo",  # does not begin with it: put after it
         "Prompt: a cat on a windowsill",  # only the user's prompt: a duplicate, dropped
         "a cat on a windowsill, " + "very " * 60 + "detailed"],  # over the text limit: cut and marked
        ["tabby cat, bokeh, 35mm photo", "oil painting, warm palette"],  # a duplicate, resampled
    ])

    def generate_text(prompt, image=None, **kwargs):
        seen.append((prompt, image))
        return next(replies)

    monkeypatch.setattr(vlm, "generate_text", generate_text)
    result = refine.pivot(generator, vlm, PROMPT, n=4, pivots=2, seed=0, image_seed=3)
    refined = {r.prompt: r for r in result.refined}
    assert all(p.startswith(PROMPT) for p in refined), list(refined)
    assert set(refined) - {p for p in refined if p.startswith(PROMPT + ", very")} == {
        "a cat on a windowsill, golden hour, soft light", "a cat on a windowsill, tabby cat, bokeh, 35mm photo",
        "a cat on a windowsill, oil painting, warm palette"}
    long = next(r for p, r in refined.items() if p.startswith(PROMPT + ", very"))
    assert long.truncated and "[cut]" in reports.format_pivot_table(result)
    limit = generator.preset.max_sequence_length
    assert all(len(generator.prompt_tokenizer(p)["input_ids"]) <= limit for p in refined)
    # The VLM looked at the pivot itself, and was asked for a prompt beginning with the user's.
    assert all(image is result.pivot.image for _, image in seen)
    assert all(f'"{PROMPT}"' in prompt for prompt, _ in seen)


def test_the_table_holds_the_baseline_the_pivot_and_n_rows(tiny_models, writing_vlm):
    generator, vlm = tiny_models
    result = refine.pivot(generator, vlm, "a red bicycle", n=3, pivots=3, seed=1, image_seed=2)
    rows = reports.pivot_table(result)
    assert len(rows) == 1 + 1 + 3 and len(result.rows) == 4
    assert rows[0][0] == "pivot" and rows[0][-1] == f"a red bicycle [pivot image, seed {result.pivot.seed}]"
    assert [r[0] for r in rows[1:]] == [1, 2, 3, 4]
    assert sum(r[-1] == "a red bicycle [baseline]" for r in rows) == 1
    assert [r[1] for r in rows[1:]] == sorted((r[1] for r in rows[1:]), reverse=True)
    assert all(r.prompt.startswith("a red bicycle") for r in result.rows)
    assert all(r.image.size == (112, 112) and set(r.scores) == {*refine.RUBRICS, "vqa"} for r in result.rows)
    # Refined and baseline images share the seed: the baseline is the user's prompt at image_seed.
    baseline = next(r for r in result.rows if r.baseline)
    assert distance(baseline.image, generator.generate("a red bicycle", 2)) < 0.5


@pytest.mark.parametrize("kwargs,message", [
    (dict(pivots=0), "number of pivot images 0 must be a whole number from 1 to 8"),
    (dict(pivots=9), "number of pivot images 9 must be a whole number from 1 to 8"),
    (dict(pivots=2.5), "number of pivot images 2.5"),
    (dict(prompt="  "), "the prompt is empty"),
    (dict(n=0), "number of candidates 0"),
    (dict(temperature=0.0), "temperature 0.0"),
    (dict(prompt="a cat " * 40), "fills the generator's text limit"),
])
def test_bad_input_is_refused_naming_the_value(tiny_models, kwargs, message):
    generator, vlm = tiny_models
    with pytest.raises(ValueError, match=message):
        refine.pivot(generator, vlm, **({"prompt": "a cat"} | kwargs))
    assert checks.MAX_PIVOTS == 8


@pytest.mark.parametrize("argv,message", [
    (["--prompt", "a cat", "--mode", "pivot", "--pivots", "0"], "number of pivot images 0 must be"),
    (["--prompt", "a cat", "--mode", "pivot", "--pivots", "9"], "number of pivot images 9 must be"),
    (["--prompt", "", "--mode", "pivot"], "the prompt is empty"),
    (["--image", "x.png", "--mode", "pivot"], "--mode pivot refines a --prompt"),
    (["--prompt", "a cat", "--mode", "image"], "invalid choice: 'image'"),
])
def test_cli_bad_input_is_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        refine_cmd.main(["--preset", "tiny", *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err


def test_cli_pivot_mode_prints_the_table_and_saves_the_pivot(tmp_path, capsys, writing_vlm):
    assert refine_cmd.main(["--preset", "tiny", "--prompt", "a cat", "--mode", "pivot", "--pivots", "2", "--n", "2",
                        "--seed", "4", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[baseline]" in out and "[pivot image, seed " in out and out.splitlines()[1].lstrip().startswith("pivot")
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(names) == 1 + 3 and names[0] in ("00-pivot-seed4.png", "00-pivot-seed5.png")


def test_text_mode_is_the_default_and_unchanged(tmp_path, capsys, writing_vlm):
    assert refine_cmd.main(["--preset", "tiny", "--prompt", "a cat", "--n", "2", "--out-dir", str(tmp_path)]) == 0
    assert "[pivot" not in capsys.readouterr().out and len(list(tmp_path.glob("*.png"))) == 3


def test_pivot_pairs_are_pngs_beside_the_jsonl_with_relative_paths(tiny_models, tmp_path, writing_vlm):
    generator, vlm = tiny_models
    out = tmp_path / "pairs" / "pivots.jsonl"
    pairs = self_reward.pivot_pairs(generator, vlm, ["a cat on a windowsill", "a  tropical beach"], out, n=2,
                                    pivots=2, seed=3)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(pairs) == len(rows) == 2
    assert [r["prompt"] for r in rows] == ["a cat on a windowsill", "a tropical beach"]  # spaces folded
    for r in rows:
        image = out.parent / r["image"]  # relative to the JSONL file
        assert not Path(r["image"]).is_absolute() and image.is_file()
        assert Image.open(image).size == (112, 112) and r["pivot_seed"] in (3, 4) and r["seed"] == 3
        assert r["system_prompt"].startswith(r["prompt"]) and r["system_prompt"] != r["prompt"]
        assert all(isinstance(r[k], float) for k in ("system_score", "baseline_score", "pivot_score"))
        assert r["rejected"] is None or (r["rejected_score"] < r["system_score"]
                                         and r["rejected"].startswith(r["prompt"]))


def test_self_reward_cli_writes_pivot_pairs(tmp_path, capsys, writing_vlm):
    (tmp_path / "prompts.txt").write_text("a cat on a windowsill\n")
    pairs = tmp_path / "pivots.jsonl"
    code = self_reward_cmd.main(["--preset", "tiny", "--prompts", str(tmp_path / "prompts.txt"), "--n", "2",
                             "--pivots", "2", "--epochs", "1", "--lr", "1e-3", "--out", str(tmp_path / "sr"),
                             "--pivot-pairs", str(pairs)])
    assert code == 0 and f"pivot pairs: 1 in {pairs}" in capsys.readouterr().out
    row = json.loads(pairs.read_text())
    assert (tmp_path / row["image"]).is_file() and (tmp_path / "sr" / "round1" / "pairs.jsonl").is_file()


@pytest.mark.parametrize("extra,message", [
    (["--pivot-pairs", "pairs.txt"], "--pivot-pairs 'pairs.txt' must end in .jsonl"),
    (["--pivot-pairs", "p.jsonl", "--pivots", "12"], "number of pivot images 12"),
])
def test_self_reward_pivot_options_refused_before_loading(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.txt").write_text("a cat\n")
    with pytest.raises(SystemExit) as exc:
        self_reward_cmd.main(["--preset", "tiny", "--prompts", "prompts.txt", *extra])
    assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("fixture", ["tiny_models", "tiny_sana_models"])
def test_the_pivot_images_are_batched_and_each_is_its_seeds_own(fixture, request):
    generator, _ = request.getfixturevalue(fixture)
    seeds = [3, 4, 5, 6, 7]  # two pipeline calls at batch size 4
    batched = generator.generate_seeds(PROMPT, seeds, batch_size=4)
    for seed, image in zip(seeds, batched, strict=True):
        one = np.asarray(generator.generate(PROMPT, seed), dtype=int)
        assert np.abs(np.asarray(image, dtype=int) - one).max() <= 1, seed  # float rounding of a batch at most
    assert distance(batched[0], batched[1]) > 5  # each row has its own noise
