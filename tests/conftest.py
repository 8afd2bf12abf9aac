"""Shared fixtures: tiny models built once per test session (random weights, CPU, no download)."""

from __future__ import annotations

import pytest

from pipelines.loading import load_generator, load_vlm
from pipelines.presets import get_preset


@pytest.fixture(scope="session")
def tiny_models():
    preset = get_preset("tiny")
    return load_generator(preset, "cpu"), load_vlm(preset, "cpu")


@pytest.fixture(scope="session")
def tiny_sana_models():
    preset = get_preset("tiny-sana")
    return load_generator(preset, "cpu"), load_vlm(preset, "cpu")


@pytest.fixture(scope="session")
def toy_models():
    """The trained toy world (`assets/toy-world`): a generator and a VLM that reads, writes and scores."""
    preset = get_preset("toy")
    return load_generator(preset, "cpu"), load_vlm(preset, "cpu")


DETAILS = ["soft morning light", "wide shot", "warm colours", "golden hour", "film grain", "high detail",
           "light mist", "deep shadows", "pastel tones", "close up", "rule of thirds", "clear sky"]


@pytest.fixture
def writing_vlm(monkeypatch, tiny_models):
    """The tiny presets' VLMs have random weights and write byte soup, which refinement rightly refuses to rank. For
    tests of the plumbing around the writing (ranking, pivots, pairs, CLIs), this stand-in writes readable prompts,
    different per seed and per reply, and a one-line verdict for a rubric; every other part of the VLM is real."""
    import random
    import types

    from pipelines.vlm import VLM

    def generate_text(self, prompt, image=None, max_new_tokens=128, temperature=0.0, top_p=1.0,
                      num_return_sequences=1, seed=None):
        if "Score:" in prompt:  # a rubric: one readable verdict
            return ["Score: 3\nA plain picture, evenly lit."] * num_return_sequences
        rng = random.Random(f"{prompt}|{seed}")
        return [f"{rng.choice(['a', 'the'])} scene, " + ", ".join(rng.sample(DETAILS, 3))
                for _ in range(num_return_sequences)]

    monkeypatch.setattr(VLM, "generate_text", generate_text)  # the VLMs a CLI loads
    # The shared tiny VLM too: a test that patched its instance leaves the original bound there when it undoes
    monkeypatch.setattr(tiny_models[1], "generate_text", types.MethodType(generate_text, tiny_models[1]))
