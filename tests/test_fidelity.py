"""Method fidelity: one-step models train on the very sample users get; every run ends judged on unseen seeds."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from diffusers import SanaPipeline

from pipelines import checks, lora, optimize
from pipelines.optimize import (
    judged_pixels,
    save_result,
    sidecar_path,
    train_seed,
    unseen_seeds,
)
from pipelines.presets import get_preset
from pipelines.random_models import build_sana, seeded
from pipelines.vlm import from_pil

QA = [("Is the horizon of the scene aligned with the red line? Answer with Yes or No.", "Yes")]


def perturb_lora(transformer: torch.nn.Module, seed: int = 1) -> None:
    """Give the freshly added LoRA non-zero B matrices, as after some training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def stock_pixels(generator, cond, seed: int) -> torch.Tensor:
    """The image the stock pipeline gives for a seed, as floats in [0, 1] (no 8-bit rounding)."""
    noise = generator.initial_noise(seed, generator.size)
    out = generator.pipe(**cond.tensors, latents=noise, height=generator.size, width=generator.size,
                         num_inference_steps=1, output_type="pt", **generator.pipeline_kwargs(generator.size))
    return out.images.float()


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_one_step_training_sample_is_the_users_image(tiny_models, scale):
    """The pixels the VLM judges at a training step are exactly `generate(prompt, seed)` for that step's seed,
    with the LoRA at scale 0 (the base model) and with a trained-looking LoRA at scale 1."""
    generator, _ = tiny_models
    cond = generator.encode("a tropical beach")
    seed = train_seed(7, 3)
    lora.add_lora(generator.transformer, 4, 20.0, generator.lora_targets)
    try:
        perturb_lora(generator.transformer)
        if scale == 0.0:
            generator.transformer.disable_adapters()
        with torch.no_grad():
            judged = judged_pixels(generator, cond, seed, None)
            users = stock_pixels(generator, cond, seed)
            other_seed = stock_pixels(generator, cond, seed + 1)
        torch.testing.assert_close(judged, users, atol=2e-5, rtol=0)
        assert (judged - other_seed).abs().max() > 1e-2  # the comparison can fail
    finally:
        lora.remove_all_lora(generator.transformer)
    x_t, sigma = generator.noisy_latents(cond, seed)
    assert sigma == 1.0 and torch.equal(x_t, generator.initial_noise(seed, generator.size))


def test_the_loop_judges_the_image_generate_gives_for_the_steps_seed(tiny_models):
    """Through `optimize` itself: step 1's judged image (LoRA B = 0, i.e. scale 0) is what a user would get from
    `generate(prompt, train_seed(seed, 1))`, to 8-bit rounding."""
    generator, vlm = tiny_models
    steps = []
    optimize.optimize(generator, vlm, "a tropical beach", QA, steps=2, seed=5, preview_every=1, progress=False,
                      callback=steps.append, eval_seeds=0)
    judged = np.asarray(steps[0].preview, dtype=np.int16)
    users = np.asarray(generator.generate("a tropical beach", train_seed(5, 1)), dtype=np.int16)
    assert np.abs(judged - users).max() <= 1
    other = np.asarray(generator.generate("a tropical beach", train_seed(5, 2)), dtype=np.int16)
    assert np.abs(judged - other).max() > 10


def test_renoising_is_an_explicit_option(tiny_models):
    generator, _ = tiny_models
    cond = generator.encode("a desert")
    renoising = dataclasses.replace(generator.preset, renoise=(0.3, 1.0))
    original, generator.preset = generator.preset, renoising
    try:
        sigmas = {generator.noisy_latents(cond, s)[1] for s in range(10)}
    finally:
        generator.preset = original
    assert all(0.3 <= s <= 1.0 for s in sigmas) and len(sigmas) == 10
    assert generator.noisy_latents(cond, 3)[1] == 1.0
    with pytest.raises(ValueError, match="re-noising range 0.5,0.2"):
        checks.check_renoise((0.5, 0.2))


def test_every_run_ends_judged_on_unseen_seeds(tiny_models, tmp_path):
    generator, vlm = tiny_models
    result = optimize.optimize(generator, vlm, "a tropical beach", QA, steps=3, seed=2, progress=False)
    unseen = result.unseen
    assert unseen.skipped is None and unseen.seeds == unseen_seeds(2, 4)
    assert not set(unseen.seeds) & {train_seed(2, k) for k in range(1, checks.MAX_STEPS + 1)}
    assert len(unseen.p_base) == len(unseen.p_lora) == 4 and all(0 < p < 1 for p in unseen.p_base + unseen.p_lora)
    # Scale 0 is the base model: the same images the pipeline gives without any LoRA.
    assert np.array_equal(np.asarray(unseen.images_base[0]), np.asarray(generator.generate("a tropical beach",
                                                                                          unseen.seeds[0])))
    assert not np.array_equal(np.asarray(unseen.images_base[0]), np.asarray(unseen.images_lora[0]))
    assert unseen.mean_base == pytest.approx(np.mean(unseen.p_base))
    # Each P is the VLM's score of that very image.
    assert unseen.p_lora[1] == pytest.approx(vlm.score(from_pil(unseen.images_lora[1]), QA), abs=1e-6)
    path = tmp_path / "beach.safetensors"
    save_result(result, path, generator, "a tropical beach", QA)
    header = lora.lora_metadata(path)["unseen_seeds"]
    side = json.loads(sidecar_path(path).read_text())
    assert header == side["unseen_seeds"] == unseen.as_dict()
    assert header["seeds"] == unseen.seeds and header["mean_scale1"] == pytest.approx(unseen.mean_lora)
    assert [h["step"] for h in side["history"]] == [1, 2, 3]
    assert side["history"][0]["loss"] == pytest.approx(result.history[0].loss)


def test_a_stopped_run_says_it_skipped_the_evaluation(tiny_models, tmp_path):
    generator, vlm = tiny_models
    steps = []
    result = optimize.optimize(generator, vlm, "a beach", QA, steps=10, progress=False, callback=steps.append,
                               should_stop=lambda: len(steps) >= 2)
    assert result.cancelled and result.unseen.skipped == "the run was stopped"
    assert result.unseen.line() == "unseen seeds: not evaluated (the run was stopped)"
    save_result(result, tmp_path / "x.safetensors", generator, "a beach", QA)
    assert lora.lora_metadata(tmp_path / "x.safetensors")["unseen_seeds"] == {"skipped": "the run was stopped"}


def test_sana_lora_targets_feed_forward_convs_and_loads_in_stock_sana(tiny_sana_models, tmp_path):
    generator, vlm = tiny_sana_models
    assert {"ff.conv_inverted", "ff.conv_point"} <= set(generator.lora_targets)
    result = optimize.optimize(generator, vlm, "a desert", QA, steps=2, progress=False, eval_seeds=0)
    assert any("ff.conv_inverted" in k for k in result.state_dict)
    assert any("ff.conv_point" in k for k in result.state_dict)
    path = tmp_path / "sana.safetensors"
    save_result(result, path, generator, "a desert", QA)
    seeded(0)
    pipe: SanaPipeline = build_sana("tiny")
    pipe.set_progress_bar_config(disable=True)

    def image() -> np.ndarray:
        return pipe("a desert", num_inference_steps=2, height=128, width=128, guidance_scale=1.0,
                    generator=torch.Generator().manual_seed(0), output_type="np", use_resolution_binning=False,
                    complex_human_instruction=None, max_sequence_length=32).images[0]

    base = image()
    pipe.load_lora_weights(str(path), adapter_name="mine")
    loaded = {n for n, _ in pipe.transformer.named_modules() if n.endswith("ff.conv_point.lora_A")}
    assert loaded, "the conv LoRA layers were not loaded"
    assert np.abs(image() - base).max() > 1e-5
    pipe.unload_lora_weights()
    assert np.array_equal(image(), base)


def test_flux_dev_reads_512_t5_tokens_and_schnell_256():
    assert get_preset("flux-dev").max_sequence_length == 512
    assert get_preset("flux-schnell").max_sequence_length == 256
    assert get_preset("flux-schnell").renoise is None and get_preset("flux-schnell").inference_steps == 1


def test_one_step_needs_one_transformer_pass_per_step_fewer(tiny_models, monkeypatch):
    """The default one-step path calls the transformer once per training step; re-noising calls it twice."""
    generator, vlm = tiny_models
    calls = []
    original = type(generator).velocity
    monkeypatch.setattr(type(generator), "velocity", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    optimize.optimize(generator, vlm, "a beach", QA, steps=3, progress=False, eval_seeds=0)
    default = len(calls)
    calls.clear()
    original_preset = generator.preset
    generator.preset = dataclasses.replace(original_preset, renoise=(0.3, 1.0))
    try:
        optimize.optimize(generator, vlm, "a beach", QA, steps=3, progress=False, eval_seeds=0)
    finally:
        generator.preset = original_preset
    assert (default, len(calls)) == (3, 6)
