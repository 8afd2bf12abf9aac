"""A new generator family is one record (adapter, LoRA targets, random build, seconds per step) plus its line in
`generator.FAMILIES`: the loader, the LoRA, the optimization loop and the app's duration requests read only that.
Here a throwaway family, defined in this test file, is a Flux adapter whose LoRA reaches only the attention."""

from __future__ import annotations

import dataclasses

import pytest

from pipelines import generator as gen_mod
from pipelines import random_models
from pipelines.loading import load_generator, load_vlm
from pipelines.optimize import optimize
from pipelines.presets import get_preset
from studio import gpu


class AttentionOnlyFlux(gen_mod.FluxGenerator):
    """The same model; a family of its own so the test can tell its record was used."""


def random_attention_only(size: str, preset) -> object:
    return random_models.build_flux(size)


FAMILY = gen_mod.Family(gen_mod.FluxPipeline, AttentionOnlyFlux, ("to_q", "to_k", "to_v"), random_attention_only,
                        seconds_per_step=2.0)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(gen_mod.FAMILIES, "attention-only", FAMILY)  # the one registry line


def test_a_new_family_loads_trains_and_is_timed_from_its_record(registered):
    preset = dataclasses.replace(get_preset("tiny"), name="tiny-attention", generator="attention-only",
                                 lora_targets=())
    generator = load_generator(preset, "cpu")
    assert isinstance(generator, AttentionOnlyFlux) and generator.lora_targets == ("to_q", "to_k", "to_v")
    vlm = load_vlm(preset, "cpu")
    result = optimize(generator, vlm, "a red apple", [("Is it red? Answer with Yes or No.", "Yes")], steps=1,
                      eval_seeds=0, progress=False)
    trained = {key.split(".lora_")[0].rsplit(".", 1)[-1] for key in result.state_dict}
    assert trained == {"to_q", "to_k", "to_v"}  # the family's targets, not Flux's
    flux = dataclasses.replace(preset, generator="flux")
    qa = [("q", "Yes")]
    assert gpu.step_seconds(preset, 1, None) == pytest.approx(2 * gpu.step_seconds(flux, 1, None))
    assert gpu.run_seconds(preset, "p", 0, qa, 10, "/x") > gpu.run_seconds(flux, "p", 0, qa, 10, "/x")


def test_an_unknown_family_is_an_error_naming_it():
    preset = dataclasses.replace(get_preset("tiny"), generator="flux-3")
    with pytest.raises(ValueError, match="unknown generator family 'flux-3'; known: flux, sana"):
        load_generator(preset, "cpu")
