"""The toy world's trainers as plain functions (fast): the generator's tokenizer, and the VLM's training rows, which
must be the app's own questions with the answers the world's analytic truth gives."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from overlays import horizon, line_weight, palette
from pipelines import judge, refine, world, world_training, world_vlm_training


def test_every_word_of_the_grammar_is_one_token_and_prompts_end_in_eos():
    tokenizer = world_training.grammar_tokenizer()
    words = {w for scene in world.SCENES for w in scene.split()} | {w for t in world.TIMES for w in t.split()}
    words |= {w for values in world.WORDS.values() for text in values.values() for w in text.split()}
    for word in words:
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1, word
    longest = world.prompt_of({"scene": "a lavender field", "time": "golden hour", "placement": "low",
                               "sky": "clouds", "body": "sun", "tree": "right", "mood": "vivid", "birds": "yes"})
    ids = tokenizer(longest)["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id and len(ids) <= world_training.TOKENS


def test_evaluation_seeds_are_never_training_seeds():
    assert world_training.TRAIN_SEED + 10**6 < world_training.EVAL_SEEDS
    with pytest.raises(ValueError, match="unknown stage 'vea'"):
        world_training.parse_minutes("vea=3")
    assert world_training.parse_minutes("onestep=2")["onestep"] == 2.0


def test_the_noise_chooses_the_light_and_the_horizon_and_never_what_the_prompt_names():
    import torch

    noise = torch.randn(400, *world_training.LATENT, generator=torch.Generator().manual_seed(1))
    u = world_training.draws_of(noise)
    assert u.shape == (400, 16) and abs(u.mean() - 0.5) < 0.02 and 0.27 < u.std() < 0.31  # uniform over seeds
    free = [world_training.scene_of({"scene": "a beach"}, d) for d in u]
    horizons = np.array([s.horizon for s in free])
    assert horizons.min() < 0.25 and horizons.max() > 0.75 and horizons.std() > 0.15  # free within the scene
    assert {s.time for s in free} == set(world.TIMES) and 0.3 < np.mean([s.tilt == 0 for s in free]) < 0.9
    assert {s.attributes().get("body") for s in free} == {None}  # what "a beach" does not name is not painted
    named = {"scene": "the sea", "time": "golden hour", "placement": "low", "sky": "clouds", "body": "sun",
             "tree": "left", "mood": "muted", "birds": "yes"}
    for d in u[:50]:
        assert world_training.scene_of(named, d).attributes() == named
    # the sun is never out at night, even when the time is left free
    assert all(world_training.scene_of({"scene": "a lake", "body": "sun"}, d).time != "night" for d in u)
    # a tiny change in the noise moves the picture a little (the map is smooth where it is not a choice)
    a, b = world_training.scene_of({"scene": "a lake"}, u[0]), world_training.scene_of({"scene": "a lake"}, u[0] + 1e-4)
    assert abs(a.horizon - b.horizon) < 1e-3 and a.time == b.time


@pytest.fixture(scope="module")
def image_and_scene():
    scene = world.Scene("a green field", "noon", 0.6, tree="left", tree_x=0.25, body="sun", body_x=0.7, body_y=0.25,
                        seed=3)
    return world.render(scene), scene


def test_yes_no_rows_are_the_apps_questions_with_the_truths_answers(image_and_scene):
    image, scene = image_and_scene
    truth = world.read(np.asarray(image))
    rng = np.random.default_rng(0)
    answers = {}
    for _ in range(40):
        pixels, question, answer = world_vlm_training.horizon_row(rng, image, truth)
        assert question == horizon.QUESTION and tuple(pixels.shape) == (1, 3, world.SIZE, world.SIZE)
        answers.setdefault(answer, 0)
        answers[answer] += 1
    assert answers.get("Yes", 0) >= 8 and answers.get("No", 0) >= 8  # both answers taught
    _, question, answer = world_vlm_training.palette_row(rng, image, truth, scene)
    assert question == palette.QUESTION and answer in ("Yes", "No")
    assert world_vlm_training.line_weight_of(truth, world.SIZE) == 3  # a tree trunk
    _, question, _ = world_vlm_training.line_weight_row(rng, image, truth)
    assert question == line_weight.QUESTION
    # the sky is farther than any point on the ground; lower on the ground is closer
    assert world_vlm_training.distance_of((0.5, 0.1), truth) > world_vlm_training.distance_of((0.5, 0.7), truth)
    assert world_vlm_training.distance_of((0.5, 0.7), truth) > world_vlm_training.distance_of((0.5, 0.95), truth)


def test_a_depth_row_comes_back_when_the_horizon_leaves_almost_no_ground(image_and_scene):
    # A generated image read with its horizon at 0.93 once hung the VLM's training in an endless draw of points.
    image, _ = image_and_scene
    truth = dataclasses.replace(world.read(np.asarray(image)), horizon=0.93, tilt=0.0)
    _, question, answer = world_vlm_training.depth_row(np.random.default_rng(0), image, truth)
    assert "Point A" in question and answer in ("Yes", "No")


def test_near_miss_rows_teach_where_yes_ends(image_and_scene):
    # Run 13's judge said P 0.95 to lines 0.13 from a horizon: its No lines were mostly far away.
    image, _ = image_and_scene
    truth = world.read(np.asarray(image))
    rng = np.random.default_rng(2)
    for horizon_at in (0.06, 0.5, 0.94):  # near either edge a miss goes to the side that stays inside the picture
        moved = dataclasses.replace(truth, horizon=horizon_at)
        gaps = [abs(world_vlm_training.near_miss_line(rng, moved).y - horizon_at) for _ in range(50)]
        low, high = world_vlm_training.NEAR_MISS
        assert min(gaps) >= low - 1e-3 and max(gaps) <= high + 1e-3
    answers = [world_vlm_training.near_miss_row(rng, image, truth)[2] for _ in range(60)]
    assert 20 <= answers.count("No") <= 40 and set(answers) == {"Yes", "No"}
    for _ in range(20):  # a Yes line is on the horizon by the same rule as every horizon row
        pixels, question, answer = world_vlm_training.line_row(image, world_vlm_training.line_on_horizon(rng, truth),
                                                               truth)
        assert answer == "Yes" and question == horizon.QUESTION


def test_depth_probe_targets_say_where_the_points_are_and_which_is_closer(image_and_scene):
    image, scene = image_and_scene
    items = world_vlm_training.seen([(image, scene)] * 12)
    aux = world_vlm_training.depth_aux_items(np.random.default_rng(4), items)
    truth = items[0].truth
    for pixels, (ax, ay, bx, by, closer) in aux:
        assert tuple(pixels.shape) == (1, 3, world.SIZE, world.SIZE)
        # red dots drawn where the targets say (the picture is a green field at noon: no red of its own there)
        row, col = round(ay * (world.SIZE - 1)), round(ax * (world.SIZE - 1))
        r, g, b = pixels[0, :, row, col].tolist()
        assert r > 0.8 and g < 0.3 and b < 0.3, (ax, ay)
        expect = world_vlm_training.distance_of((ax, ay), truth) < world_vlm_training.distance_of((bx, by), truth)
        assert closer == float(expect)
    assert {t[-1] for _, t in aux} == {0.0, 1.0}  # both answers taught


def test_textured_copies_cost_the_toy_aesthetic_and_keep_the_scene(image_and_scene):
    # The judge's training sees the textures hacked LoRAs paint, scored by the same analytic aesthetic.
    image, _ = image_and_scene
    clean = world.aesthetic(image)
    rng = np.random.default_rng(5)
    for kind in ("checks", "stripes", "bands"):
        copy = world_vlm_training.textured(rng, image, kind)
        assert copy.size == image.size and world.artefacts(copy) > 2 * world.artefacts(image), kind
        assert world.aesthetic(copy) < clean - 0.5, kind
        assert world.read(copy).scene == "a green field", kind  # darker in a pattern, still the prompt's scene
    assert world_vlm_training.textured(rng, image).size == image.size  # a texture drawn at random


def test_rubric_rows_are_scored_in_the_judges_layout_with_words_of_the_grammar(image_and_scene):
    image, _ = image_and_scene
    truth = world.read(np.asarray(image))
    rows = world_vlm_training.rubric_rows(np.random.default_rng(1), image, truth, "a green field, the moon")
    assert [q for _, q, _ in rows] == [judge.rubric_prompt(r, "a green field, the moon") for r in judge.RUBRICS]
    for _, _, answer in rows:
        score, explanation = answer.split("\n")
        assert judge.parse_score(score) is not None and explanation.endswith(".")
    assert "not the moon" in rows[1][2] and "a green field" in rows[1][2]


def test_rewrites_keep_the_request_and_add_words_of_mixed_quality():
    rng = np.random.default_rng(2)
    rows = world_vlm_training.text_rows(rng, 60)
    assert all(pixels is None and question.startswith(refine.REWRITE.split("{")[0]) for pixels, question, _ in rows)
    rewrites = [answer for _, _, answer in rows]
    assert all(world.parse(r).get("scene") for r in rewrites)
    added = [set(world.parse(r)) - {"scene", "time"} for r in rewrites]
    assert np.mean([len(a) >= 2 for a in added]) > 0.8
    good = {next(iter(world.parse(w))) + "=" + next(iter(world.parse(w).values()))
            for w in world_vlm_training.GOOD_WORDS}
    words = [f"{k}={v}" for r in rewrites for k, v in world.parse(r).items() if k not in ("scene", "time")]
    share = np.mean([w in good for w in words])
    assert 0.4 < share < 0.9, share  # mixed: best-of-N and DPO have something to choose


def test_descriptions_are_the_images_own_prompt_and_the_pivot_begins_with_the_request(image_and_scene):
    image, _ = image_and_scene
    truth = world.read(np.asarray(image))
    (_, q1, described), (_, q2, pivot) = world_vlm_training.describe_rows(image, truth)
    assert q1 == refine.IMAGE_TO_PROMPT and world.alignment(described, truth) == 1.0
    assert q2 == refine.PIVOT_TO_PROMPT.format(prompt="a green field") and pivot.startswith("a green field, ")
    assert world.parse(pivot) == world.parse(described)


def test_fresh_rows_are_drawn_by_task_share_each_task_asking_its_own_question():
    rng = np.random.default_rng(3)
    items = world_vlm_training.seen([(world.render(s), s) for s in (world.sample(rng) for _ in range(4))])
    rows = world_vlm_training.fresh_rows(rng, items, 60, {"describe": 1.0})
    questions = {q for _, q, _ in rows}
    assert questions == {refine.IMAGE_TO_PROMPT} | {q for q in questions if q.startswith("This image was made for")}
    assert all(world.parse(answer).get("scene") for _, _, answer in rows)  # a prompt of the grammar, read back
    rows = world_vlm_training.fresh_rows(rng, items, 200, {"describe": 0.5, "horizon": 0.5})
    described = sum(q == refine.IMAGE_TO_PROMPT or q.startswith("This image was made for") for _, q, _ in rows)
    assert 70 < described < 130  # about half, as shared


def test_alignment_negatives_are_as_long_as_the_positives_and_never_shown():
    # The first negatives named every attribute and the positives a few: the judge learnt length, not the prompt.
    rng = np.random.default_rng(5)
    shown, not_shown, scene_swapped = [], [], 0
    for scene in (world.sample(rng) for _ in range(60)):
        truth = world.read(np.asarray(world.render(scene)))
        attributes = truth.attributes()
        shown.append(len(world.parse(world_vlm_training.short_of(rng, attributes))))
        other = world_vlm_training.other_prompt(rng, attributes)
        not_shown.append(len(world.parse(other)))
        assert world.alignment(other, truth) < 1.0, (other, attributes)
        scene_swapped += world.parse(other)["scene"] != attributes["scene"]
    assert abs(np.mean(shown) - np.mean(not_shown)) < 0.5, (np.mean(shown), np.mean(not_shown))
    assert 15 <= scene_swapped <= 45  # about half swap the scene, the rest change or add a word


def test_fresh_alignment_rows_ask_the_prompts_question_both_ways():
    rng = np.random.default_rng(4)
    items = world_vlm_training.seen([(world.render(s), s) for s in (world.sample(rng) for _ in range(6))])
    rows = world_vlm_training.fresh_rows(rng, items, 80, {"alignment": 1.0})
    assert {q.split(" ")[0] for _, q, _ in rows} == {"Does"}  # "Does this image show ..." or VQAScore's "figure"
    answers = [a for _, _, a in rows]
    assert 20 <= answers.count("No") <= 60 and answers.count("Yes") + answers.count("No") == 80


def test_the_shipped_judge_reads_which_scene_a_prompt_names():
    # Run 5 said P 0.97 that every scene shows every scene; the guard's "lost its prompt" rests on this reading.
    from pipelines.loading import load_vlm
    from pipelines.presets import get_preset

    matrix = world_vlm_training.scene_matrix(load_vlm(get_preset("toy"), "cpu"))
    scenes = list(world.SCENES)
    best = [max(scenes, key=lambda asked: matrix[asked][shown]) for shown in scenes]
    assert sum(b == s for b, s in zip(best, scenes, strict=True)) >= 6, matrix  # a beach and a desert may swap


def test_the_score_digits_are_taught_as_a_narrow_spread_around_the_analytic_score():
    values = torch.tensor([0.0, 1.3, 2.5, 3.7, 5.0])
    target = world_vlm_training.digit_target(values)
    assert torch.allclose(target.sum(-1), torch.ones(5))
    assert target.argmax(-1).tolist() == [0, 1, 2, 4, 5]
    expected = (target * torch.arange(6.0)).sum(-1)
    assert torch.allclose(expected[1:4], values[1:4], atol=0.05)  # the Score tab shows the expected digit
    assert expected[0] < 0.5 and expected[-1] > 4.5


def test_rubric_values_score_alignment_by_the_prompts_attributes_shown(image_and_scene):
    image, scene = image_and_scene
    item = world_vlm_training.seen([(image, scene)])[0]
    own = world.prompt_of(item.truth.attributes())
    other = own.replace("a green field", "a snowy plain")
    own_values = world_vlm_training.rubric_values(item.parts, item.truth, own)
    other_values = world_vlm_training.rubric_values(item.parts, item.truth, other)
    assert own_values["alignment"] == 5.0
    assert other_values["alignment"] < 5.0
    assert other_values["preference"] < 0.5 * own_values["aesthetic"] + 2.5


def test_paired_score_digits_differ_only_by_a_prompt_shown_and_one_not_shown(image_and_scene, monkeypatch):
    # Drawn one by one, the alignment digit of runs 13-16 learnt the picture alone (about 3 whatever scene was named)
    from pipelines.loading import load_vlm
    from pipelines.presets import get_preset

    vlm = load_vlm(get_preset("toy"), "cpu")
    asked = []

    def logits(rows):
        asked.extend(rows)
        return torch.zeros(len(rows), len(vlm.tokenizer))

    monkeypatch.setattr(vlm, "next_token_logits", logits)
    item = world_vlm_training.seen([image_and_scene])[0]
    world_vlm_training.score_loss(vlm, np.random.default_rng(0), [item], 8, paired=True)
    assert len(asked) == 8
    pairs = asked[:4]  # two pairs, then four digits drawn one by one
    for (shown_pixels, shown_q, _), (other_pixels, other_q, _) in zip(pairs[::2], pairs[1::2], strict=True):
        assert torch.equal(shown_pixels, other_pixels)
        rubric = next(r for r in judge.RUBRICS if judge.RUBRICS[r].split("'")[0] in shown_q)
        assert rubric in ("alignment", "preference") and judge.RUBRICS[rubric].split("'")[0] in other_q
        shown, other = (q.split("'")[1] for q in (shown_q, other_q))
        assert world.alignment(shown, item.truth) == 1.0 > world.alignment(other, item.truth)
