"""The toy world: scene measures against their analytic ground truth, CIEDE2000, and the committed models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from overlays import composite, horizon
from overlays.colors import ciede2000, ciede2000_lab
from pipelines import toy_world as tw

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "toy-world"

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


def test_horizon_of_random_scenes():
    rng = np.random.default_rng(123)
    scenes = [tw.sample_scene(rng) for _ in range(50)]
    assert any(s.sun for s in scenes) and any(s.tree for s in scenes)
    for s in scenes:
        h, tilt = tw.horizon_of(tw.render_scene(s))
        assert abs(h - s.h) <= 0.02, s
        assert abs(tilt - s.tilt) <= 1.5, s


def test_scene_sampling_ranges():
    rng = np.random.default_rng(0)
    assert len(tw.PROMPTS) >= 6
    for p in ("a beach at noon", "a desert at sunset", "a green field", "a snowy plain"):
        assert p in tw.PROMPTS
    for _ in range(100):
        s = tw.sample_scene(rng)
        assert tw.H_RANGE[0] <= s.h <= tw.H_RANGE[1] and abs(s.tilt) <= tw.MAX_TILT
    with pytest.raises(ValueError, match="unknown toy-world prompt"):
        tw.sample_scene(rng, "a teddy bear")
    img = tw.render_scene(tw.sample_scene(rng, "a green field"))
    assert img.size == (112, 112) and img.mode == "RGB"


def test_scheme_of_recovers_prompt():
    rng = np.random.default_rng(7)
    for prompt in tw.PROMPTS:
        for _ in range(4):
            name, dist = tw.scheme_of(tw.render_scene(tw.sample_scene(rng, prompt)))
            assert name == prompt and dist < 6


def test_palette_distance():
    rng = np.random.default_rng(3)
    for prompt in tw.PROMPTS:
        img = tw.render_scene(tw.sample_scene(rng, prompt))
        assert tw.palette_distance(img, tw.dominant_colors(img)) < 1.0
        assert tw.palette_distance(img, [(255, 0, 255), (0, 255, 0)]) > 25
    with pytest.raises(ValueError):
        tw.palette_distance(img, [])


# --------------------------------------------------------------------------- the committed models
needs_assets = pytest.mark.skipif(not (ASSETS / "generator").is_dir() or not (ASSETS / "vlm").is_dir(),
                                  reason="assets/toy-world not trained yet")


@pytest.fixture(scope="module")
def toy_preset():
    from pipelines.presets import get_preset

    return get_preset("toy")  # the preset points at the committed folders


@needs_assets
def test_committed_generator_makes_beaches(toy_preset):
    from pipelines.loading import load_generator

    gen = load_generator(toy_preset, "cpu")
    results = []
    for seed in range(8):
        img = gen.generate("a beach at noon", seed)
        h, _ = tw.horizon_of(img)
        results.append((0.1 <= h <= 0.9, tw.scheme_of(img)[0] == "a beach at noon"))
    assert sum(ok for ok, _ in results) >= 7
    assert sum(beach for _, beach in results) >= 6


@needs_assets
def test_committed_vlm_answers_horizon_question(toy_preset):
    from pipelines.loading import load_vlm
    from pipelines.vlm import from_pil

    vlm = load_vlm(toy_preset, "cpu")
    rng = np.random.default_rng(2024)  # not a training seed
    correct = 0
    for i in range(40):
        scene = tw.sample_scene(rng)
        near = i % 2 == 0
        line = scene.h + rng.uniform(-0.04, 0.04) if near else rng.uniform(0.05, 0.95)
        line = float(np.clip(line, 0.03, 0.97))
        pixels = composite(from_pil(tw.render_scene(scene)), horizon.render(horizon.Spec(line), (112, 112)))
        with torch.no_grad():
            p_yes = vlm.score(pixels, [(horizon.QUESTION, "Yes")])
        correct += (p_yes > 0.5) == (abs(line - scene.h) < tw.HORIZON_TOLERANCE)
    assert correct >= 36
