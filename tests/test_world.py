"""The toy world's grammar, renders and analytic measures (pipelines/world.py): the truth every gate of the toy world
is measured against, so each measure is checked here on rendered scenes whose truth is known (120 of them)."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from overlays.colors import ciede2000, ciede2000_lab
from pipelines import world


@pytest.fixture(scope="module")
def renders():
    rng = np.random.default_rng(20261206)
    scenes = [world.sample(rng) for _ in range(120)]
    images = [world.render(s) for s in scenes]
    return scenes, images, [world.read(im) for im in images]


def test_a_prompt_reads_back_its_attributes_and_ignores_unknown_words():
    prompt = "a beach at golden hour, low horizon, a lone tree on the right, vivid colours"
    assert world.parse(prompt) == {"scene": "a beach", "time": "golden hour", "placement": "low", "tree": "right",
                                   "mood": "vivid"}
    assert world.parse("A Beach with purple elephants, 35mm, bokeh") == {"scene": "a beach"}
    assert world.parse("zebras dancing") == {}
    assert world.parse("a lake at night at noon")["time"] == "night"  # the first of two values
    assert world.parse("a sea, vivid colors")["mood"] == "vivid"
    attributes = {"scene": "the sea", "time": "sunset", "placement": "high", "sky": "clouds", "body": "sun",
                  "tree": "left", "mood": "muted", "birds": "yes"}
    assert world.parse(world.prompt_of(attributes)) == attributes
    assert len(world.SCENES) >= 8 and set(world.TIMES) == {"noon", "golden hour", "sunset", "night"}


def test_sampled_scenes_have_what_the_prompt_names():
    rng = np.random.default_rng(1)
    for _ in range(200):
        prompt, scene = world.sample_prompt(rng, rich=0.6)
        named = world.parse(prompt)
        assert {k: v for k, v in scene.attributes().items() if k in named} == named, (prompt, scene)
    free = [world.sample(rng, {"scene": "a beach"}).horizon for _ in range(400)]
    assert min(free) >= 0.2 and max(free) <= 0.8 and np.std(free) > 0.15  # the horizon is free in every scene


def test_renders_are_crisp_and_repeatable(renders):
    scenes, images, _ = renders
    assert images[0].size == (world.SIZE, world.SIZE)
    assert np.array_equal(np.asarray(world.render(scenes[0])), np.asarray(images[0]))
    ratios = [world.artefacts(im) for im in images]
    assert 0.8 <= np.median(ratios) <= 1.25, np.median(ratios)  # the constant is the median of clean renders


def test_every_attribute_is_read_back_from_pixels(renders):
    scenes, _, readings = renders
    errors = [abs(s.horizon - r.horizon) for s, r in zip(scenes, readings, strict=True)]
    assert np.quantile(errors, 0.99) < 0.02, max(errors)
    tilt = [abs(s.tilt - r.tilt) for s, r in zip(scenes, readings, strict=True)]
    assert np.quantile(tilt, 0.95) < 1.0
    wrong = Counter(key for s, r in zip(scenes, readings, strict=True)
                    for key in ("scene", "time", "mood", "sky", "body", "tree", "birds")
                    if s.attributes().get(key) != r.attributes().get(key))
    assert all(count <= 0.05 * len(scenes) for count in wrong.values()), wrong
    sides = [(s.tree, r.tree) for s, r in zip(scenes, readings, strict=True) if s.tree and r.tree]
    assert all(a == b for a, b in sides)


def test_placement_words_put_the_horizon_where_they_say():
    rng = np.random.default_rng(2)
    for word, target in (("low", world.LOW), ("high", world.HIGH)):
        images = [world.render(world.sample(rng, {"placement": word})) for _ in range(30)]
        assert all(abs(world.read(im).horizon - target) <= 0.08 for im in images)


def test_alignment_is_the_share_of_named_attributes_present(renders):
    scenes, _, readings = renders
    own = [world.alignment(world.prompt_of(s.attributes()), r) for s, r in zip(scenes, readings, strict=True)]
    assert np.mean([a == 1.0 for a in own]) >= 0.9
    scene = world.Scene("a beach", "noon", 0.5, tree="left", tree_x=0.2, seed=4)
    image = world.render(scene)
    assert world.alignment("a beach at noon, a lone tree on the left", image) == 1.0
    assert world.alignment("a beach at night, a lone tree on the left", image) == pytest.approx(2 / 3)
    assert world.alignment("a desert at night", image) == 0.0
    assert world.alignment("something else entirely", image) == 1.0


def test_the_aesthetic_follows_the_photographic_rules():
    base = world.Scene("a green field", "golden hour", 2 / 3, tree="left", tree_x=0.25, body="sun", body_x=0.75,
                       body_y=0.3, seed=5)
    good = world.aesthetic(world.render(base))
    assert good >= 4.0
    assert world.aesthetic(world.render(world.with_attributes(base, horizon=0.5))) < good - 0.5  # not on a third
    assert world.aesthetic(world.render(world.with_attributes(base, tilt=4.0))) < good - 0.5  # not level
    on_horizon = world.with_attributes(base, body_y=2 / 3 - world.body_radius("sun"))  # touching it
    assert world.aesthetic(world.render(on_horizon)) < good - 0.4  # the sun sits on the horizon
    centred = world.with_attributes(base, tree_x=0.5, body=None)
    assert world.aesthetic(world.render(centred)) < good - 0.4


def test_tiles_and_stripes_count_as_artefacts_and_against_the_aesthetic():
    image = world.render(world.Scene("a beach", "noon", 2 / 3, body="sun", body_x=0.7, body_y=0.3, seed=6))
    pixels = np.asarray(image).astype(float)
    grid = ((np.indices(pixels.shape[:2]) // 3).sum(0) % 2)[..., None] * 40 - 20  # a 3 px checker, +-20 levels
    stripes = (np.arange(pixels.shape[0]) // 2 % 2)[:, None, None] * 50 - 25
    for texture in (grid, stripes):
        tiled = Image.fromarray(np.clip(pixels + texture, 0, 255).astype(np.uint8))
        assert world.artefacts(tiled) > 3 * world.artefacts(image)
        assert world.aesthetic(tiled) < world.aesthetic(image) - 1.0


def test_a_scene_matches_its_own_palette_and_not_anothers():
    rng = np.random.default_rng(3)
    own, other = [], []
    for _ in range(24):
        scene = world.sample(rng, {"time": "noon"})
        image = world.render(scene)
        own.append(world.palette_distance(image, world.scene_palette(scene)))
        far = dataclasses.replace(scene, time="night",
                                  scene="a lavender field" if scene.scene != "a lavender field" else "a desert")
        other.append(world.palette_distance(image, world.scene_palette(far)))
    # A sun, a tree or clouds add a dominant colour no palette of the scene's gradients holds: most, not all, match.
    assert np.median(own) < 9 and np.mean(np.array(own) < world.PALETTE_MATCH) >= 0.65, own
    assert np.mean(np.array(other) > world.PALETTE_MATCH) >= 0.9, other
    assert all(a < b for a, b in zip(own, other, strict=True))
    with pytest.raises(ValueError, match="the palette is empty"):
        world.palette_distance(image, [])


def test_clouds_and_birds_follow_the_shape_draws_and_keep_clear_of_the_sun_and_tree():
    rng = np.random.default_rng(3)
    for _ in range(200):
        scene = world.with_attributes(world.sample(rng), clouds=True, birds=True,
                                      shapes=tuple(rng.uniform(size=world.SHAPE_DRAWS)))
        clouds, birds = world.layout(scene)
        assert 1 <= len(clouds) <= 3 and 2 <= len(birds) <= 3
        assert world.layout(scene) == (clouds, birds)  # the same draws, the same sky
        for x, y, _w in clouds:
            assert y < scene.horizon
            if scene.body:
                assert math.hypot(x - scene.body_x, y - scene.body_y) >= world.body_radius(scene.body) + 0.13
        for x, _y in birds:
            if scene.tree:
                assert abs(x - scene.tree_x) >= 0.12
    moved = world.with_attributes(scene, shapes=(0.5, 0.9, 0.1, 0.3, 0.3))
    assert world.layout(moved) != world.layout(scene)


# Sharma, Wu and Dalal (2005), Table 1: (L, a, b) pairs and their CIEDE2000 difference.
SHARMA = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 3.1571, -77.2803), (50.0, 0.0, -82.7485), 2.8615),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0009), 7.1792),
    ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0011), 7.2195),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((2.0776, 0.0795, -1.135), (0.9033, -0.0636, -0.5514), 0.9082),
]


@pytest.mark.parametrize(("lab_a", "lab_b", "expected"), SHARMA)
def test_ciede2000_reference_pairs(lab_a, lab_b, expected):
    assert float(ciede2000_lab(lab_a, lab_b)) == pytest.approx(expected, abs=1e-4)
    assert float(ciede2000_lab(lab_b, lab_a)) == pytest.approx(expected, abs=1e-4)  # symmetric


def test_ciede2000_rgb():
    assert ciede2000((10, 200, 30), (10, 200, 30)) == 0.0
    assert ciede2000("#ff0000", (0, 0, 255)) > 50
    vec = ciede2000_lab(np.array([p[0] for p in SHARMA]), np.array([p[1] for p in SHARMA]))
    np.testing.assert_allclose(vec, [p[2] for p in SHARMA], atol=1e-4)
