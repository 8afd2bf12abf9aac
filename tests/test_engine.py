"""The engine on tiny models: preprocessing parity, the loop learns, LoRA files, loaders, cleanup."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from PIL import Image

from pipelines import checks, lora
from pipelines.loading import load_generator, load_vlm, save_random
from pipelines.optimize import held_out_loss, optimize, save_result
from pipelines.presets import get_preset
from pipelines.random_models import build_flux, seeded
from pipelines.vlm import from_pil

QA = [("Is the horizon of the scene aligned with the red line? Answer with Yes or No.", "Yes")]
HELD_OUT = [90_001, 90_002, 90_003, 90_004]


def smooth_image(h: int, w: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = (rng.random((max(h // 8, 1), max(w // 8, 1), 3)) * 255).astype(np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BICUBIC)


@pytest.mark.parametrize("h,w", [(112, 112), (224, 168), (448, 448), (128, 128), (100, 150), (512, 384)])
def test_qwen_preprocessing_matches_hf_processor(tiny_models, h, w):
    _, vlm = tiny_models
    image = smooth_image(h, w, seed=h + w)
    ref = vlm.image_processor(images=[image], return_tensors="pt")
    x = from_pil(image).requires_grad_(True)
    ours = vlm.pixel_inputs(x)
    assert ours["image_grid_thw"].tolist() == ref["image_grid_thw"].tolist()
    diff = (ours["pixel_values"] - ref["pixel_values"]).abs()
    needs_resize = vlm.target_size(h, w) != (h, w)
    if needs_resize:
        # Measured in 8-bit pixel levels: undo the normalisation's division by std.
        std = torch.tensor(vlm.image_processor.image_std).repeat_interleave(2 * 14 * 14)
        assert float((diff * std).detach().max()) * 255 <= 2.0 + 1e-3
    else:
        assert float(diff.detach().max()) == 0.0
    ours["pixel_values"].square().sum().backward()
    assert bool((x.grad.abs().sum(dim=1) > 0).all()), "some input pixels get no gradient"


@pytest.fixture(scope="module")
def tiny_idefics2():
    return load_vlm(get_preset("tiny-idefics2"), "cpu")


@pytest.mark.parametrize("h,w", [(400, 500), (112, 112), (1200, 800), (378, 1500)])
def test_idefics2_preprocessing_matches_hf_processor(tiny_idefics2, h, w):
    vlm = tiny_idefics2
    image = smooth_image(h, w, seed=h * w)
    ref = vlm.image_processor(images=[[image]], return_tensors="pt")
    x = from_pil(image).requires_grad_(True)
    ours = vlm.pixel_inputs(x)
    assert ours["pixel_values"].shape == ref["pixel_values"].shape
    assert torch.equal(ours["pixel_attention_mask"], ref["pixel_attention_mask"].bool())
    diff = float((ours["pixel_values"] - ref["pixel_values"]).abs().detach().max())
    if vlm.target_size(h, w) == (h, w):
        assert diff == 0.0
    else:
        assert diff * 0.5 * 255 <= 2.0 + 1e-3  # std 0.5: back to 8-bit levels
    ours["pixel_values"].square().sum().backward()
    assert bool((x.grad.abs().sum(dim=1) > 0).all())


def test_idefics2_loss_reaches_pixels_with_a_spaced_answer(tiny_idefics2):
    vlm = tiny_idefics2
    text = vlm.expand_image_tokens(vlm.chat_prompt("Is it?"), {})
    assert text.startswith("User:<fake_token_around_image><image>") and text.endswith("Assistant:")
    x = torch.rand(1, 3, 112, 112, requires_grad=True)
    vlm.loss(x, QA).backward()
    assert float(x.grad.abs().sum()) > 0
    assert 0 < vlm.score(x.detach(), QA) < 1


def test_batched_pairs_equal_single_pairs_and_multi_token_answers(tiny_models):
    _, vlm = tiny_models
    pixels = from_pil(smooth_image(112, 112, 0))
    pairs = [QA[0], ("Is the sky blue and the sea calm? Answer with Yes or No.", "Yes, the sky is blue")]
    assert len(vlm.tokenizer(pairs[1][1], add_special_tokens=False)["input_ids"]) > 1
    together = vlm.answer_nll(pixels, pairs)
    alone = torch.cat([vlm.answer_nll(pixels, [p]) for p in pairs])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    # The multi-token answer is the mean NLL of its tokens under teacher forcing.
    prompt = vlm.encode_text(vlm.expand_image_tokens(vlm.chat_prompt(pairs[1][0]), vlm.pixel_inputs(pixels)))
    answer = vlm.encode_text(pairs[1][1])
    ids = torch.tensor([prompt + answer])
    logits = vlm.model(input_ids=ids, use_cache=False,
                       **vlm.batch_image_inputs([vlm.pixel_inputs(pixels)], ids)).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    manual = -torch.stack([logp[len(prompt) + i - 1, t] for i, t in enumerate(answer)]).mean()
    torch.testing.assert_close(alone[1], manual, rtol=1e-4, atol=1e-4)
    assert vlm.score(pixels, pairs) == pytest.approx(float(torch.exp(-together).mean()), rel=1e-5)


@pytest.mark.parametrize("vlm_fixture", ["tiny_models", "tiny_idefics2"])
def test_rows_with_different_images_batch_like_single_rows(vlm_fixture, request):
    vlm = request.getfixturevalue(vlm_fixture)
    vlm = vlm[1] if isinstance(vlm, tuple) else vlm
    a, b = from_pil(smooth_image(112, 112, 5)), from_pil(smooth_image(168, 224, 6))
    items = [(a, QA[0][0], "Yes"), (b, "Is this a cat? Answer with Yes or No.", "No"), (a, QA[0][0], "No")]
    together = vlm.nll_rows(items)
    alone = torch.cat([vlm.nll_rows([item]) for item in items])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(together[0], together[2])


def test_prompt_uses_chat_template_and_one_token_per_merged_patch(tiny_models):
    _, vlm = tiny_models
    pixels = from_pil(smooth_image(224, 168, 1))
    text = vlm.expand_image_tokens(vlm.chat_prompt("Is it?"), vlm.pixel_inputs(pixels))
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    assert text.count("<|image_pad|>") == (16 * 12) // 4


@pytest.mark.parametrize("fixture", ["tiny_models", "tiny_sana_models"])
def test_optimization_lowers_held_out_loss(fixture, request, tmp_path):
    generator, vlm = request.getfixturevalue(fixture)
    cond = generator.encode("a tropical beach")
    before = held_out_loss(generator, vlm, cond, QA, HELD_OUT)
    result = optimize(generator, vlm, cond, QA, steps=20, progress=False)
    assert len(result.history) == 20 and not result.cancelled
    path = tmp_path / "lora.safetensors"
    save_result(result, str(path), generator, "a tropical beach", QA)
    with lora.applied(generator.pipe, path, 1.0):
        after = held_out_loss(generator, vlm, cond, QA, HELD_OUT)
    assert after < before - 0.005, (before, after)


def test_multi_step_model_samples_to_a_step_then_takes_one_grad_step():
    generator = load_generator(get_preset("tiny-dev"), "cpu")
    cond = generator.encode("a desert")
    sigmas = generator.sigmas(4, generator.size)
    assert len(sigmas) == 5 and sigmas[0] == pytest.approx(1.0) and sigmas[-1] == 0.0
    seen = {generator.noisy_latents(cond, seed)[1] for seed in range(40)}
    # Every sampled sigma is one of the schedule's steps, and more than one step gets sampled.
    assert all(any(abs(s - t) < 1e-6 for t in sigmas[:-1]) for s in seen)
    assert len(seen) > 1


def test_progress_callback_previews_and_cancel(tiny_models):
    generator, vlm = tiny_models
    steps = []
    result = optimize(generator, vlm, "a beach", QA, steps=10, preview_every=2, progress=False,
                      callback=steps.append, should_stop=lambda: len(steps) >= 3)
    assert result.cancelled and [s.step for s in steps] == [1, 2, 3]
    assert steps[1].preview is not None and steps[1].preview.size == (112, 112) and steps[0].preview is None
    assert all(0 < s.p < 1 and s.p == pytest.approx(np.exp(-s.loss)) for s in steps)  # one question
    assert steps[0].elapsed < steps[2].elapsed


def fresh_tiny_flux() -> FluxPipeline:
    """The same random weights as the `tiny` preset, built as a plain stock pipeline."""
    seeded(0)
    pipe = build_flux("tiny")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def stock_image(pipe: FluxPipeline, seed: int = 5) -> np.ndarray:
    out = pipe("a desert", num_inference_steps=1, guidance_scale=0.0, height=112, width=112,
               max_sequence_length=32, generator=torch.Generator().manual_seed(seed), output_type="np")
    return out.images[0]


@pytest.fixture(scope="module")
def trained_lora(tiny_models, tmp_path_factory):
    generator, vlm = tiny_models
    result = optimize(generator, vlm, "a tropical beach", QA, steps=5, progress=False)
    assert (result.rank, result.alpha) == (4, 20.0)  # the tiny preset's rank, alpha = 5 x rank
    path = tmp_path_factory.mktemp("lora") / "beach.safetensors"
    save_result(result, str(path), generator, "a tropical beach", QA, "horizon at y=0.35")
    return path


def test_lora_file_loads_into_stock_pipeline_and_unloads_bit_for_bit(trained_lora):
    pipe = fresh_tiny_flux()
    base = stock_image(pipe)
    pipe.load_lora_weights(str(trained_lora), adapter_name="beach")
    assert pipe.transformer.peft_config["beach"].lora_alpha == 4  # alpha = rank: the scale is folded into B
    with_lora = stock_image(pipe)
    assert np.abs(with_lora - base).max() > 1e-4
    pipe.unload_lora_weights()
    assert np.array_equal(stock_image(pipe), base)


def test_lora_metadata_in_header(trained_lora):
    meta = lora.lora_metadata(trained_lora)
    assert meta["prompt"] == "a tropical beach"
    assert meta["questions"] == [list(QA[0])]
    assert (meta["preset"], meta["rank"], meta["alpha"], meta["steps"]) == ("tiny", 4, 20.0, 5)
    assert meta["overlay"] == "horizon at y=0.35"


def test_applying_a_lora_leaves_the_shared_pipeline_as_before(tiny_models, trained_lora):
    generator, _ = tiny_models
    base = np.asarray(generator.generate("a desert", 3))
    scaled = np.asarray(generator.generate("a desert", 3, lora_path=trained_lora, scale=5.0))
    assert not np.array_equal(scaled, base)
    assert np.array_equal(np.asarray(generator.generate("a desert", 3)), base)
    with pytest.raises(RuntimeError, match="boom"), lora.applied(generator.pipe, trained_lora, 2.0):
        raise RuntimeError("boom")
    assert not getattr(generator.transformer, "peft_config", None)
    assert np.array_equal(np.asarray(generator.generate("a desert", 3)), base)


def test_failed_run_leaves_the_shared_pipeline_as_before(tiny_models, monkeypatch):
    generator, vlm = tiny_models
    base = np.asarray(generator.generate("a desert", 4))
    calls = {"n": 0}
    real_nll = vlm.answer_nll

    def failing_nll(pixels, qa):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("VLM crashed")
        return real_nll(pixels, qa)

    monkeypatch.setattr(vlm, "answer_nll", failing_nll)
    with pytest.raises(RuntimeError, match="VLM crashed"):
        optimize(generator, vlm, "a beach", QA, steps=10, progress=False)
    assert not getattr(generator.transformer, "peft_config", None)
    assert all("lora" not in n for n, _ in generator.transformer.named_modules())
    assert np.array_equal(np.asarray(generator.generate("a desert", 4)), base)


@pytest.mark.parametrize("bad", [None, "", "missing", "notes.txt", "garbage.safetensors"])
def test_bad_lora_files_are_named(tmp_path, bad):
    if bad is None:
        assert checks.check_scale(5.0) == 5.0
        with pytest.raises(ValueError, match="-1"):
            checks.check_scale(-1)
        return
    path = tmp_path / (bad or "x")
    if bad == "notes.txt":
        path.write_text("hello")
    if bad == "garbage.safetensors":
        path.write_bytes(b"\x00" * 64)
    with pytest.raises((ValueError, FileNotFoundError), match=path.name):
        lora.check_lora_file(path)


@pytest.mark.parametrize("name", ["tiny", "tiny-sana", "tiny-idefics2"])
def test_real_loader_reads_saved_model_folders(name, tmp_path):
    preset = get_preset(name)
    gen_dir, vlm_dir = save_random(preset, tmp_path)
    from_folders = preset.with_sources(str(gen_dir), str(vlm_dir))
    random_gen, random_vlm = load_generator(preset, "cpu"), load_vlm(preset, "cpu")
    loaded_gen, loaded_vlm = load_generator(from_folders, "cpu"), load_vlm(from_folders, "cpu")
    assert np.array_equal(np.asarray(loaded_gen.generate("a beach", 1)), np.asarray(random_gen.generate("a beach", 1)))
    pixels = from_pil(smooth_image(112, 112, 2))
    assert loaded_vlm.score(pixels, QA) == pytest.approx(random_vlm.score(pixels, QA), rel=1e-5)
    assert loaded_vlm.tokenizer.chat_template == random_vlm.tokenizer.chat_template


def test_unknown_preset_and_missing_folder_list_what_exists(tmp_path):
    with pytest.raises(ValueError, match="available: tiny, .*flux-schnell"):
        get_preset("flux-turbo")
    (tmp_path / "flux-local").mkdir()
    preset = get_preset("tiny").with_sources(str(tmp_path / "flux-locl"))
    with pytest.raises(FileNotFoundError, match="flux-locl.*flux-local"):
        load_generator(preset, "cpu")


def test_text_generation_with_and_without_image(tiny_models):
    _, vlm = tiny_models
    greedy = vlm.generate_text("Describe the image.", image=smooth_image(112, 112, 3), max_new_tokens=4)
    assert len(greedy) == 1 and isinstance(greedy[0], str)
    again = vlm.generate_text("Describe the image.", image=smooth_image(112, 112, 3), max_new_tokens=4)
    assert greedy == again
    sampled = vlm.generate_text("Write a prompt.", max_new_tokens=6, temperature=0.9, top_p=0.9,
                                num_return_sequences=3, seed=1)
    assert len(sampled) == 3
    with pytest.raises(ValueError, match="empty"):
        vlm.generate_text("  ")


def test_text_encoders_are_not_needed_once_the_prompt_is_encoded(tiny_models, monkeypatch):
    generator, vlm = tiny_models
    cond = generator.encode("a beach")

    def gone(*args, **kwargs):
        raise AssertionError("text encoder used after encoding")

    for name in ("text_encoder", "text_encoder_2"):
        monkeypatch.setattr(getattr(generator.pipe, name), "forward", gone)
    result = optimize(generator, vlm, cond, QA, steps=2, progress=False)
    assert len(result.history) == 2
    assert generator.generate(cond, 0).size == (112, 112)


def test_full_size_random_builds_match_published_parameter_counts():
    """`bench --random-weights` measures the real architectures: their sizes match the published models."""
    from pipelines.random_models import build_qwen_vl, build_sana

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    with torch.device("meta"):  # shapes only, no memory
        flux, sana = build_flux("full"), build_sana("full")
        qwen7, _, _ = build_qwen_vl("full-7b")
    assert count(flux.transformer) == 11_891_178_560
    assert count(flux.vae) == 83_819_683
    assert count(flux.text_encoder) == 123_060_480
    assert count(flux.text_encoder_2) == 4_762_310_656
    assert count(sana.transformer) == 1_604_462_752
    assert count(sana.vae) == 312_250_275
    assert count(sana.text_encoder) == 2_614_341_888
    assert count(qwen7) == 8_292_166_656


def test_bf16_frozen_weights_train_fp32_lora(tiny_models):
    _, vlm = tiny_models
    generator = load_generator(get_preset("tiny"), "cpu")
    generator.pipe.to(dtype=torch.bfloat16)
    dtypes = set()

    def look(step):
        dtypes.update(p.dtype for n, p in generator.transformer.named_parameters() if "lora_" in n)
        frozen = {p.dtype for n, p in generator.transformer.named_parameters() if "lora_" not in n}
        assert frozen == {torch.bfloat16}

    result = optimize(generator, vlm, "a beach", QA, steps=2, progress=False, callback=look)
    assert dtypes == {torch.float32}
    assert all(np.isfinite(s.loss) for s in result.history)
    assert all(v.dtype == torch.float32 for v in result.state_dict.values())


def test_same_seed_gives_the_same_lora(tiny_models):
    generator, vlm = tiny_models
    first = optimize(generator, vlm, "a beach", QA, steps=2, seed=7, progress=False)
    torch.rand(100)  # whatever ran in between must not matter
    second = optimize(generator, vlm, "a beach", QA, steps=2, seed=7, progress=False)
    assert first.state_dict.keys() == second.state_dict.keys()
    assert all(torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict)


def test_gradient_checkpointing_changes_memory_not_results(tiny_models):
    generator, vlm = tiny_models
    plain = optimize(generator, vlm, "a beach", QA, steps=2, seed=3, progress=False, gradient_checkpointing=False)
    during = []
    saved = optimize(generator, vlm, "a beach", QA, steps=2, seed=3, progress=False, gradient_checkpointing=True,
                     callback=lambda step: during.append(generator.transformer.gradient_checkpointing))
    assert during == [True, True]
    for k in plain.state_dict:
        torch.testing.assert_close(plain.state_dict[k], saved.state_dict[k], rtol=1e-4, atol=1e-6)
    assert not generator.transformer.gradient_checkpointing  # the shared pipeline is left as it was
    assert get_preset("flux-schnell").gradient_checkpointing and not get_preset("tiny").gradient_checkpointing
