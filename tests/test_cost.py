"""The cost model (`pipelines/cost.py`, `bench --cost`): one optimisation step counted on the meta device."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
import torch.nn.functional as F

from pipelines import cost, lora
from pipelines.commands import bench as bench_cmd
from pipelines.loading import load_generator, load_vlm
from pipelines.presets import get_preset

META = torch.device("meta")


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = bench_cmd.main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def tiny_measurement() -> cost.Measurement:
    return cost.measure(get_preset("tiny"))


def test_a_known_linear_counts_2mnk_forward_and_backward():
    """m x k input, k -> n Linear: 2mnk forward; the backward to the input another 2mnk (frozen weight); with the
    LoRA attached (rank r), its two thin matmuls and their weight gradients on top."""
    with cost.on_meta():
        generator, _ = cost.build(get_preset("tiny"))
        linear = generator.transformer.x_embedder
        m, k, n = 49, linear.in_features, linear.out_features
        x = torch.zeros(1, m, k, device=META)
        assert cost.flops_of(lambda: linear(x))[1] == 2 * m * n * k
        x.requires_grad_(True)
        assert cost.flops_of(lambda: linear(x).sum().backward())[1] == 4 * m * n * k
        r = 4
        lora.add_lora(generator.transformer, r, 5.0 * r, ("x_embedder",))
        try:
            forward = cost.flops_of(lambda: generator.transformer.x_embedder(x))[1]
        finally:
            lora.remove_all_lora(generator.transformer)
    assert forward == 2 * m * n * k + 2 * m * k * r + 2 * m * r * n


def test_fused_attention_keeps_the_shapes_and_the_flops_of_attention():
    q = torch.empty(2, 4, 16, 8, device=META, dtype=torch.bfloat16)
    kv = torch.empty(2, 2, 20, 8, device=META, dtype=torch.bfloat16)  # grouped-query: 2 key/value heads
    mask = torch.ones(2, 1, 16, 20, device=META, dtype=torch.bool)
    with cost.fused_attention():
        plain = F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)
        masked = F.scaled_dot_product_attention(q, kv, kv, attn_mask=mask, enable_gqa=True)
        flops = cost.flops_of(lambda: F.scaled_dot_product_attention(q, q, q))[1]
    assert plain.shape == masked.shape == (2, 4, 16, 8)
    assert flops == 4 * 2 * 4 * 16 * 16 * 8  # QK^T and PV: 2 x (2 B H L S D)
    assert F.scaled_dot_product_attention.__name__ == "scaled_dot_product_attention"  # put back


def test_component_bytes_match_the_real_built_models(tiny_measurement):
    preset = get_preset("tiny")
    generator, vlm = load_generator(preset, "cpu"), load_vlm(preset, "cpu")
    real = {"transformer": generator.transformer, "vae": generator.vae, "text_encoder": generator.pipe.text_encoder,
            "text_encoder_2": generator.pipe.text_encoder_2, "vlm": vlm.model}
    counted = {c.name: c for c in tiny_measurement.components}
    assert set(counted) == set(real)
    for name, model in real.items():
        params = list(model.parameters())
        assert counted[name].parameters == sum(p.numel() for p in params)
        assert counted[name].bytes == sum(t.numel() * t.element_size() for t in (*params, *model.buffers())), name
        assert counted[name].dtype == "float32"


def test_values_on_meta_give_the_vlm_the_sequence_it_sees_on_the_cpu(tiny_models, tiny_measurement):
    """Token ids, the image grid and positions are read by value on the meta device: the VLM row has the same
    length there as on the CPU."""
    generator, vlm = tiny_models
    pixels = torch.rand(1, 3, generator.size, generator.size)
    prompt, answer = vlm.encode_turn(*cost.QUESTION[0][:1], vlm.pixel_inputs(pixels), cost.QUESTION[0][1])
    assert tiny_measurement.tokens["vlm tokens per row"] == len(prompt) + len(answer)
    assert tiny_measurement.tokens["image tokens"] == (generator.size // 16) ** 2


def test_stages_add_up_and_checkpointing_recomputes(tiny_measurement):
    m = tiny_measurement
    off, on = m.flops[False], m.flops[True]
    assert set(off) == set(cost.STAGES) and off["other"] == pytest.approx(0, abs=1)  # elementwise: not counted
    assert off["sampler (no grad)"] == 0 and m.sampler_passes == 0  # a one-step model trains on the noise
    # Frozen weights: the backward pass computes input gradients (about one forward) plus the LoRA's.
    assert 1.9 * m.sampler_pass_flops < off["transformer"] < 3.1 * m.sampler_pass_flops
    # Checkpointing recomputes the blocks' forward once in the backward pass: more FLOPs, at most one pass more.
    assert off["transformer"] < on["transformer"] <= off["transformer"] + m.sampler_pass_flops
    assert on["vlm"] == off["vlm"]  # the VLM is never checkpointed


def test_checkpointing_lowers_the_saved_activations_and_the_peak(tiny_measurement):
    off = cost.estimate(None, checkpointing=False, measurement=tiny_measurement)
    on = cost.estimate(None, checkpointing=True, measurement=tiny_measurement)
    assert on.saved_bytes == off.saved_bytes and on.saved_bytes["on"] < on.saved_bytes["off"]
    assert on.memory["saved_activations"] == on.saved_bytes["on"] < off.memory["saved_activations"]
    for stage in ("transformer", "vae decode"):
        assert tiny_measurement.saved[True][stage] < tiny_measurement.saved[False][stage]
    assert tiny_measurement.saved[True]["vlm"] == tiny_measurement.saved[False]["vlm"]
    assert on.memory["transient"] > off.memory["transient"]  # a block recomputed in the backward pass
    assert on.peak_bytes < off.peak_bytes
    assert on.flops_per_step > off.flops_per_step
    assert on.peak_bytes == sum(on.memory.values())
    assert on.floor_s == pytest.approx(20 * on.flops_per_step / 790e12)  # the tiny preset's 20 steps


def test_offloaded_text_encoders_leave_the_step_peak(tiny_measurement):
    gpu = cost.estimate(None, text_encoders="gpu", measurement=tiny_measurement)
    off = cost.estimate(None, text_encoders="offload", measurement=tiny_measurement)
    encoders = sum(c.bytes for c in tiny_measurement.components if c.role == "text_encoder")
    assert gpu.memory["weights"] - off.memory["weights"] == encoders > 0
    assert gpu.encode_peak_bytes == off.encode_peak_bytes  # they still visit the GPU to encode
    with pytest.raises(ValueError, match="text encoders 'cpu'"):
        cost.estimate(None, text_encoders="cpu", measurement=tiny_measurement)


@pytest.mark.slow  # a second measured step, of tiny-dev (4 s)
def test_a_multi_step_preset_counts_its_expected_sampler_passes():
    m = cost.measure(get_preset("tiny-dev"))
    assert m.sampler_passes == 1.5  # stops at a step drawn from 4: 0..3 no-grad passes
    assert m.flops[False]["sampler (no grad)"] == pytest.approx(1.5 * m.sampler_pass_flops)
    assert m.flops[False]["other"] == pytest.approx(0, abs=1)  # this seed's own passes were taken out


@pytest.mark.slow  # quantises the tiny transformer and measures a step again (4 s)
@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao is not installed")
def test_int8_base_weights_halve_the_transformer_and_keep_dequantised_weights_for_backward(tiny_measurement,
                                                                                             tiny_models):
    int8 = cost.measure(get_preset("tiny"), base_weights="int8")
    bf16 = {c.name: c for c in tiny_measurement.components}
    parts = {c.name: c for c in int8.components}
    assert parts["transformer"].bytes < 0.5 * bf16["transformer"].bytes  # fp32 tiny: a quarter, plus scales
    assert parts["vlm"].bytes == bf16["vlm"].bytes and "int8" in parts["transformer"].dtype
    # Without checkpointing every quantised layer whose input needs a gradient keeps its dequantised weight for the
    # backward pass (not the embedders and modulations fed by the timestep and the prompt); with checkpointing only
    # such layers outside the checkpointed blocks do.
    kept_off = int8.saved[False]["transformer"] - tiny_measurement.saved[False]["transformer"]
    kept_on = int8.saved[True]["transformer"] - tiny_measurement.saved[True]["transformer"]
    linear_weights = sum(m.weight.numel() * 4 for m in tiny_models[0].transformer.modules()
                         if isinstance(m, torch.nn.Linear))
    assert 0.3 * linear_weights < kept_off <= linear_weights
    assert 0 < kept_on < 0.25 * kept_off
    assert int8.flops[False]["transformer"] == tiny_measurement.flops[False]["transformer"]


def test_steering_costs_views_on_the_vlm_noises_on_everything_and_keep_a_forward(tiny_measurement):
    report = cost.estimate(None, checkpointing=False, measurement=tiny_measurement)
    stage = {s.name: s.flops for s in report.stages}
    plain = report.flops_per_step
    assert report.steering_flops() == plain
    assert report.steering_flops(views=4) == pytest.approx(plain + 3 * stage["vlm"])
    assert report.steering_flops(noises=2) == pytest.approx(2 * plain)
    assert plain < report.steering_flops(keep=1.0) < plain + stage["transformer"] + stage["vae decode"]
    # the prompt's own question is one more VLM row per view
    assert report.steering_flops(questions=2) == pytest.approx(plain + stage["vlm"])
    assert report.steering_flops(views=4, questions=2) == pytest.approx(plain + 7 * stage["vlm"])
    assert "a step with: 4 views x" in report.text() and "keep x" in report.text()
    assert "the prompt's question x" in report.text()


def test_report_text_and_json_say_it_is_a_prediction(tiny_measurement):
    report = cost.estimate(None, measurement=tiny_measurement, peak_tflops=100)
    assert report.text().startswith("PREDICTION")
    data = json.loads(report.json())
    assert data["prediction"] is True and data["preset"] == "tiny" and data["peak_tflops"] == 100
    assert {s["name"] for s in data["stages"]} == set(cost.STAGES)
    table = cost.plans_table([report])
    assert table.count("\n") == 2 and "| off | offload | bf16 |" in table


@pytest.mark.slow  # two cost-model runs of the CLI, each building the tiny models on the meta device (6 s)
def test_bench_cost_cli(tmp_path, capsys):
    out_file = tmp_path / "cost.json"
    code, out, err = run_main(["--cost", "--preset", "tiny", "--checkpointing", "on", "--text-encoders", "gpu",
                               "--json", str(out_file)], capsys)
    assert code == 0, err
    assert out.startswith("PREDICTION") and "checkpointing on, text encoders gpu" in out
    data = json.loads(out_file.read_text())
    assert data["checkpointing"] is True and data["text_encoders"] == "gpu"
    code, out, _ = run_main(["--cost", "--preset", "tiny", "--json", "-"], capsys)
    assert code == 0 and json.loads(out)["size"] == 112


@pytest.mark.parametrize("argv, message", [
    (["--memory-plans"], "--memory-plans needs --cost"),
    (["--cost", "--peak-tflops", "0"], "--peak-tflops 0"),
    (["--cost", "--size", "-16"], "--size -16"),
    (["--cost", "--base-weights", "int4"], "int4"),
    (["--cost", "--preset", "tiny-idefics2"], "Qwen2.5-VL judges only"),
])
def test_bench_cost_bad_input_is_one_line(argv, message, capsys):
    code, out, err = run_main(argv, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and not out
