"""The committed toy world (`assets/toy-world/`, the `toy` preset) against the world's analytic truth, on seeds no
training stage used: the generator paints what a prompt names and leaves the horizon free, the VLM answers the
horizon question, scores a clean picture above a tiled one and writes prompts of the grammar."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from overlays import composite, horizon
from pipelines import refine, world
from pipelines.world_training import EVAL_SEEDS


@pytest.fixture(scope="module")
def models():
    from pipelines.presets import get_preset
    from studio import gpu

    return gpu.models(get_preset("toy"))


def test_the_generator_paints_what_the_prompt_names(models):
    generator, _ = models
    # Words whose attribute accuracy passed the gate (assets/toy-world/README.md); the sun and trees did not. With
    # clouds, "high horizon" lands at 0.09 and hides them (0 of 6 on these seeds): each word alone passes, not
    # every combination.
    prompt = "a snowy plain at sunset, low horizon, cloudy sky, muted colours"
    readings = [world.read(generator.generate(prompt, EVAL_SEEDS + i)) for i in range(6)]
    for key, value in world.parse(prompt).items():
        assert sum(world.present(r, key, value) for r in readings) >= 5, (key, [r.attributes() for r in readings])


def test_the_horizon_is_free_within_a_scene_and_placed_by_its_words(models):
    generator, _ = models
    free = [world.read(generator.generate("a green field", EVAL_SEEDS + 100 + i)) for i in range(12)]
    heights = [r.horizon for r in free]
    assert np.std(heights) > 0.12 and all(r.scene == "a green field" for r in free), heights
    low = [world.read(generator.generate("a green field, low horizon", EVAL_SEEDS + 100 + i)).horizon for i in range(4)]
    assert all(abs(h - world.LOW) < 0.08 for h in low), low


def test_the_vlm_answers_the_horizon_question_on_unseen_scenes(models):
    from pipelines.vlm import from_pil

    _, vlm = models
    rng = np.random.default_rng(EVAL_SEEDS)
    right = 0
    for i in range(30):
        scene = world.sample(rng)
        line = scene.horizon + rng.uniform(-0.03, 0.03) if i % 2 else float(rng.uniform(0.1, 0.9))
        pixels = composite(from_pil(world.render(scene)), horizon.render(horizon.Spec(line), (world.SIZE,) * 2))
        with torch.no_grad():
            p_yes = vlm.score(pixels, [(horizon.QUESTION, "Yes")])
        right += (p_yes > 0.5) == (abs(line - scene.horizon) <= 0.06)
    # Chance is 15. Run 13 answered 24; run 16, hardened against textures (fooled 0 of 24 LoRAs' images against
    # 10), said No more readily and answered 21 (it missed lines on a golden-hour sea; gate 0.91 on 128); run 17,
    # shipped, answers 27 (gate 0.95). The line stays at run 16's: a judge that says No more is not wrong.
    assert right >= 21, right


def test_the_vlm_rewrites_a_short_prompt_into_rich_prompts_of_its_scene(models):
    _, vlm = models
    written = vlm.generate_text(refine.REWRITE.format(prompt="a desert"), max_new_tokens=60, temperature=0.9,
                                top_p=0.95, num_return_sequences=6, seed=EVAL_SEEDS)
    named = [world.parse(w) for w in written]
    assert sum(n.get("scene") == "a desert" and len(n) >= 2 for n in named) >= 5, written
    assert len(set(written)) >= 4, written  # sampled, not one answer six times
