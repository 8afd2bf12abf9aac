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
