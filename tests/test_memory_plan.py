"""The memory plan on the CPU (issue 15): text encoders that visit the device only to encode a new prompt, 8-bit
frozen base weights under a LoRA that trains, saves and loads in stock diffusers, and torch.compile giving the same
loss."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipelines import lora
from pipelines.generator import ENCODED_PROMPTS, quantize_base_weights
from pipelines.loading import load_generator
from pipelines.optimize import optimize, save_result
from pipelines.presets import PRESETS, get_preset
from tests.test_cli import run_main

QA = [("Is the horizon of the scene aligned with the red line? Answer with Yes or No.", "Yes")]


def test_the_real_presets_keep_text_encoders_off_the_gpu_between_prompts():
    for name in ("flux-schnell", "flux-dev", "flux-schnell-idefics2", "sana"):
        assert PRESETS[name].offload_text_encoders, name


def test_text_encoders_visit_the_device_only_for_a_new_prompt(tiny_models, monkeypatch):
    generator, _ = tiny_models
    moves, encoded = [], []
    monkeypatch.setattr(generator, "text_encoders_to", moves.append)
    real = generator.encode_prompt
    monkeypatch.setattr(generator, "encode_prompt", lambda p: encoded.append(p) or real(p))
    generator.encoded.clear()
    first = generator.encode("a lighthouse")
    assert moves == [generator.device, generator.text_encoder_home] and encoded == ["a lighthouse"]
    again = generator.encode("a lighthouse")
    assert again is first and len(moves) == 2 and len(encoded) == 1  # the same prompt: no visit, no encoder
    torch.testing.assert_close(first.tensors["prompt_embeds"], real("a lighthouse").tensors["prompt_embeds"])
    for i in range(ENCODED_PROMPTS):
        generator.encode(f"prompt {i}")
    generator.encode("a lighthouse")  # pushed out by eight newer prompts: encoded again
    assert encoded.count("a lighthouse") == 2 and len(generator.encoded) == ENCODED_PROMPTS
    generator.encode(["a", "b"])  # a batch is never cached
    generator.encode(["a", "b"])
    assert encoded[-2:] == [["a", "b"], ["a", "b"]]


def test_the_encoders_go_back_home_after_a_failed_encode(tiny_models, monkeypatch):
    generator, _ = tiny_models
    moves = []
    monkeypatch.setattr(generator, "text_encoders_to", moves.append)
    monkeypatch.setattr(generator, "encode_prompt", lambda p: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        generator.encode("never seen before")
    assert moves[-1] == generator.text_encoder_home


@pytest.fixture(scope="module")
def int8_generator():
    pytest.importorskip("torchao")
    return load_generator(dataclasses.replace(get_preset("tiny"), base_weights="int8"), "cpu")


def test_int8_base_weights_halve_the_bytes_and_keep_the_output_close(tiny_models, int8_generator):
    from torchao.utils import TorchAOBaseTensor

    plain, _ = tiny_models
    linears = [m for m in int8_generator.transformer.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m.weight, TorchAOBaseTensor) for m in linears)
    cond = plain.encode("a beach")
    x, sigma = plain.noisy_latents(cond, 2)
    a, b = plain.velocity(x, sigma, cond), int8_generator.velocity(x, sigma, cond)
    assert (a - b).abs().max() < 0.05 * a.abs().max()  # 8 bits per weight: close, not equal
    assert not torch.equal(a, b)


@pytest.mark.slow  # 8-bit matmuls are slow on a CPU: about 25 s for four steps
def test_a_lora_on_int8_base_weights_trains_saves_and_loads_in_stock_diffusers(tiny_models, int8_generator,
                                                                               tmp_path):
    generator = int8_generator
    _, vlm = tiny_models
    result = optimize(generator, vlm, "a tropical beach", QA, steps=4, progress=False, eval_seeds=0)
    assert all(v.dtype == torch.float32 for v in result.state_dict.values())
    assert any(v.abs().max() > 0 for k, v in result.state_dict.items() if ".lora_B." in k)  # B moved from zero
    assert np.isfinite([s.loss for s in result.history]).all()
    path = save_result(result, tmp_path / "int8.safetensors", generator, "a tropical beach", QA)
    plain, _ = tiny_models  # a stock fp32 pipeline of the same model
    before = np.asarray(plain.generate("a desert", 1))
    with lora.applied(plain.pipe, path, 1.0):
        after = np.asarray(plain.generate("a desert", 1))
    assert not np.array_equal(before, after)
    assert np.array_equal(np.asarray(plain.generate("a desert", 1)), before)
    assert not getattr(generator.transformer, "peft_config", None)  # and the int8 model is as it was


def test_unknown_base_weights_are_refused_on_the_cli(capsys, tmp_path):
    from pipelines.commands import optimize as optimize_cli

    code, _, err = run_main(optimize_cli.main, ["--preset", "tiny", "--base-weights", "int4", "--prompt", "a",
                                                "--question", "q", "--out", str(tmp_path / "x.safetensors")], capsys)
    assert code == 2 and "--base-weights" in err and "invalid choice: 'int4'" in err
    with pytest.raises(ValueError, match="base weights 'int4' must be one of bf16, int8, fp8"):
        quantize_base_weights(torch.nn.Linear(2, 2), "int4")


@pytest.mark.slow
def test_compile_gives_the_same_losses(tiny_models):
    generator, vlm = tiny_models
    cond = generator.encode("a beach")
    plain = optimize(generator, vlm, cond, QA, steps=3, progress=False, eval_seeds=0, seed=4)
    compiled = optimize(generator, vlm, cond, QA, steps=3, progress=False, eval_seeds=0, seed=4, compile=True)
    assert [s.loss for s in compiled.history] == pytest.approx([s.loss for s in plain.history], rel=1e-4)
    assert generator.transformer is generator.pipe.transformer  # the pipeline keeps the plain module
