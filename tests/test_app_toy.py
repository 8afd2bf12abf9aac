"""The app on the `toy` preset, through gradio_client as a user's browser calls it: the trained world paints the
prompt's scene crisply, the Refine tab ranks readable candidates, Score tells a good image from a bad one in words,
and From an image writes a prompt of the grammar. The world's analytic truth (`pipelines/world.py`) checks each."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from app_fixtures import running
from gradio_client import handle_file
from PIL import Image

from pipelines import world
from pipelines.world_vlm_training import RULE_WORDS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    with running(tmp_path_factory.mktemp("toy-studio"), preset="toy") as server:
        yield server


def small(path: str) -> np.ndarray:
    """A picture as the page shows it, back at the world's size (shown enlarged without smoothing)."""
    image = Image.open(path).convert("RGB")
    return np.asarray(image.resize((world.SIZE, world.SIZE), Image.NEAREST))


def test_a_rich_prompt_is_painted_as_it_says_and_crisp(toy):
    # Words whose attribute accuracy passed the generator's gate (assets/toy-world/README.md); the sun, the moon,
    # trees and birds did not.
    prompt = "a lake at night, cloudy sky, low horizon"
    client = toy.client()
    read = []
    for seed in (11, 12, 13):
        base = client.predict(prompt, seed, api_name="/generate")[0]
        pixels = small(base)
        read.append(world.read(pixels))
        assert world.artefacts(pixels) < 1.6, world.artefacts(pixels)  # not a smear, not a tiling
    for key, value in world.parse(prompt).items():
        assert sum(world.present(r, key, value) for r in read) >= 2, (key, value, [r.attributes() for r in read])


def test_refine_ranks_readable_candidates_of_the_users_scene_and_sends_the_winner(toy):
    client = toy.client()
    gallery, table, choice, note = client.predict("a beach", 4, 0.9, 0.95, 7, api_name="/refine")
    rows = table["data"]
    prompts = [re.sub(r" \[.*\]$", "", row[-1]) for row in rows]
    assert len(rows) == 5 and len(gallery) == 5 and "4 candidates and your prompt" in note, note
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5] and sum(r[-1].endswith("[baseline]") for r in rows) == 1
    written = [p for p in prompts if p != "a beach"]
    assert all(world.parse(p).get("scene") == "a beach" for p in written), written
    assert sum(len(world.parse(p)) >= 3 for p in written) >= 2, written  # rich: the scene and two words or more
    combined = [float(row[1]) for row in rows]
    assert combined == sorted(combined, reverse=True) and max(combined) > min(combined), combined
    # Every row carries the judge's one-line reason, in the grammar's words (it read "YesYesYes" once)
    reasons = [row[-2] for row in rows]
    assert all(r and "\n" not in r and world.parse(r).get("scene") for r in reasons), reasons
    best, base = combined[0], float(next(r[1] for r in rows if r[-1].endswith("[baseline]")))
    gain = re.search(r"The winner beats your prompt by ([+-]\d\.\d\d) of 5", note)
    assert ("Your own prompt scored best" in note if rows[0][-1].endswith("[baseline]") else
            gain and abs(float(gain[1]) - (best - base)) < 0.006), note  # the table rounds to 3 decimals
    winner = choice["value"]
    assert winner.startswith("#1: ") and client.predict(winner, api_name="/use_prompt") == winner[4:]


def test_refine_pivot_shows_the_pivot_the_baseline_and_prompts_that_begin_with_yours(toy):
    client = toy.client()
    gallery, table, choice, note = client.predict("a lake", 3, 0.9, 0.9, 2, 3, api_name="/refine_pivot")
    rows = table["data"]
    assert len(rows) == 1 + 1 + 3 and len(gallery) == 5  # the pivot, the baseline and 3 refined prompts
    assert rows[0][0] == "pivot" and re.fullmatch(r"a lake \[pivot image, seed [234]\]", rows[0][-1])
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 3, 4]
    assert [float(r[1]) for r in rows[1:]] == sorted((float(r[1]) for r in rows[1:]), reverse=True)
    assert sum(r[-1] == "a lake [baseline]" for r in rows) == 1
    assert all(r[-1].startswith("a lake") for r in rows)
    assert all(world.parse(r[-1]).get("scene") == "a lake" for r in rows)  # the pivot's keywords are the grammar's
    assert gallery[0]["caption"].startswith("pivot, seed ")
    assert "best of 3 images of your prompt (seeds 2 to 4)" in note and "3 candidates and your prompt" in note
    winner = choice["value"]
    assert winner.startswith("#1: a lake") and client.predict(winner, api_name="/use_prompt") == winner[4:]


def test_self_improve_runs_a_round_shows_before_and_after_and_refine_uses_it(toy):
    from pipelines.presets import get_preset
    from studio.context import App
    from studio.tabs.refine_prompt import active_lora, refine_prompt, self_improve

    app = App(get_preset("toy"), toy.root)  # the handlers the page calls, in the server's process
    text, session, box = self_improve(app, "a beach\na lake\nthe sea", 3, None, None)
    assert text.startswith("**One round done** on 3 prompts") and box["value"] is True, text
    first, last = map(float, re.search(r"DPO loss (\d\.\d+) -> (\d\.\d+)", text).groups())
    # the toy preset's DPO settings move the VLM; the library default leaves the loss at 0.693 to three decimals
    assert last < first, text
    for figure in ("judge's score of the rewrites", "analytic aesthetic (0-5)", "analytic preference (0-5)"):
        assert re.search(re.escape(figure) + r"[^:\n]*: \d\.\d{3} -> \d\.\d{3} \([+-]\d\.\d{3}\)", text), (figure, text)
    lora = active_lora(True, session)
    assert lora == session["vlm_lora"] and (Path(lora) / "adapter_config.json").is_file()
    assert active_lora(False, session) is None
    _, table, _, note = refine_prompt(app, "a beach", 3, 0.9, 0.9, 0, lora)
    assert "self-improved VLM" in note and len(table) == 4
    with pytest.raises(Exception, match="(?i)prompts to learn from: give at least two"):
        self_improve(app, "a beach", 3, session, None)
    with pytest.raises(Exception, match="(?i)candidates per prompt 9 must be a whole number from 2 to 8"):
        self_improve(app, "a beach\na lake", 9, session, None)


def test_score_explains_in_the_grammars_words(toy, tmp_path):
    scene = world.Scene("a beach", "noon", 0.67, body="sun", body_x=0.7, body_y=0.25)  # the rules kept
    good = world.render(scene)
    tiles = np.asarray(good).copy()
    tiles[(np.indices(tiles.shape[:2]).sum(0) // 4) % 2 == 0] //= 3  # a checkered tiling over everything
    bad = Image.fromarray(tiles)
    paths = []
    for name, image in (("good", good), ("bad", bad)):
        paths.append(tmp_path / f"{name}.png")
        image.resize((448, 448), Image.NEAREST).save(paths[-1])  # larger than the judge's pictures: fitted to them
    report = toy.client().predict("a beach at noon, the sun", handle_file(str(paths[0])), handle_file(str(paths[1])),
                                  True, api_name="/score")
    a, b = report.split("### Image B")
    rules = {w for phrases in RULE_WORDS.values() for phrase in phrases for w in phrase.split()} - {"the", "a", "is"}
    scores = []
    for part in (a, b):
        scores.append(float(re.search(r"\*\*aesthetic\*\*: ([\d.]+) / 5", part)[1]))
        assert 0 <= scores[-1] <= 5, part
        explanation = re.search(r"> _aesthetic_: (.+)", part)[1]  # one line: the reason after "Score: 3"
        assert len(set(re.findall(r"[a-z]+", explanation.lower())) & rules) >= 2, explanation  # not "YesYesYes"
    # Runs 5-11 gave every picture the same digit (the tiling 3.5 like the clean one): their rubric digit was never
    # taught, only the written verdict around it; run 13's is (Spearman 0.53 against the analytic aesthetic).
    assert scores[0] > scores[1] + 0.3, report


def test_from_an_image_writes_a_prompt_of_the_grammar(toy, tmp_path):
    client = toy.client()
    for name in ("a lavender field", "a beach", "a desert", "the sea"):
        path = tmp_path / f"{name.split()[-1]}.png"
        world.render(world.Scene(name, "sunset", 0.6, tree="right", tree_x=0.8)).save(path)
        prompt = client.predict(handle_file(str(path)), 5, api_name="/image_to_prompt")[0]
        named = world.parse(prompt)
        assert named.get("scene") == name and named.get("time") == "sunset", prompt
    # Run 5 called every picture "at sunset" and the sea a lavender field; run 11 called a sunset "night" (8 of 16
    # scene x time renders right); run 13 names scene and time right on all 16.


def test_score_tells_the_prompts_scene_from_another(toy, tmp_path):
    # The first world-2 judge said P 0.97 that any image shows any scene (its negatives were longer prompts than its
    # positives), so the guard's "lost its prompt" never fired; it must read the scene it is asked about.
    paths = []
    for name in ("a beach", "a snowy plain"):
        paths.append(tmp_path / f"{name.split()[-1]}.png")
        world.render(world.Scene(name, "noon", 0.5)).save(paths[-1])
    report = toy.client().predict("a beach at noon", handle_file(str(paths[0])), handle_file(str(paths[1])),
                                  True, api_name="/score")
    beach, snow = (float(re.search(r"VQAScore, P\(Yes\) to .*: \*\*([\d.]+)\*\*", part)[1])
                   for part in report.split("### Image B"))
    assert beach > 0.5 > snow, report
