"""LoRAs that work elsewhere: the same strength in every loader, ModelSpec metadata, continued training, several
controls in one overlay, stacked LoRAs (issue 13). Tiny random models on the CPU."""

from __future__ import annotations

import datetime
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from overlays import CONTROLS, depth, horizon, layout, line_weight, palette
from overlays.build import build
from overlays.layout import clashes
from pipelines import lora, modelspec, optimize
from pipelines.commands import optimize as optimize_cmd
from pipelines.optimize import held_out_loss, save_result
from tests.test_cli import run_main

QA = [("Is the horizon of the scene aligned with the red line? Answer with Yes or No.", "Yes")]


def perturbed_lora(generator, seed: int = 0) -> dict[str, torch.Tensor]:
    """A LoRA at the preset's rank and alpha with non-zero B (a fresh one changes nothing), as trained weights."""
    preset = generator.preset
    torch.manual_seed(seed)
    params = lora.add_lora(generator.transformer, preset.lora_rank, preset.alpha, generator.lora_targets)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.05)
    return lora.lora_state_dict(generator.transformer)


@pytest.mark.parametrize("fixture", ["tiny_models", "tiny_sana_models"])
def test_stock_diffusers_at_scale_1_gives_what_we_trained(fixture, request, tmp_path):
    generator, _ = request.getfixturevalue(fixture)
    cond = generator.encode("a beach")
    x, sigma = generator.noisy_latents(cond, 3)
    base = generator.velocity(x, sigma, cond)
    try:
        state = perturbed_lora(generator)
        ours = generator.velocity(x, sigma, cond)  # the adapter as trained: alpha = 5 x rank
    finally:
        lora.remove_all_lora(generator.transformer)
    preset = generator.preset
    path = lora.save_lora(tmp_path / "x.safetensors", state, type(generator.pipe), preset.lora_rank, preset.alpha,
                          generator.lora_targets, {})
    with lora.applied(generator.pipe, path, 1.0):  # the stock pipeline's load_lora_weights
        assert generator.pipe.transformer.peft_config[next(iter(generator.pipe.transformer.peft_config))].lora_alpha \
            == preset.lora_rank
        theirs = generator.velocity(x, sigma, cond)
    assert (ours - base).abs().max() > 1e-3
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)
    assert torch.equal(generator.velocity(x, sigma, cond), base)  # and the shared pipeline is as before


def comfy_deltas(path) -> dict[str, torch.Tensor]:
    """What ComfyUI applies per module from the file alone: (alpha / rank if a `.alpha` tensor exists, else 1)
    x up @ down; it does not read diffusers' header."""
    tensors, _ = lora.read_lora(path)
    out = {}
    for key in tensors:
        if key.endswith(".lora_A.weight"):
            module = key[:-len(".lora_A.weight")]
            down, up = tensors[key].flatten(1), tensors[f"{module}.lora_B.weight"].flatten(1)
            alpha = tensors.get(f"{module}.alpha")
            scale = float(alpha) / down.shape[0] if alpha is not None else 1.0
            out[module[len("transformer."):]] = scale * up @ down
    return out


@pytest.mark.parametrize("fixture", ["tiny_models", "tiny_sana_models"])
def test_every_module_has_our_strength_under_comfyuis_rule(fixture, request, tmp_path):
    generator, _ = request.getfixturevalue(fixture)
    preset = generator.preset
    try:
        state = perturbed_lora(generator, seed=1)
    finally:
        lora.remove_all_lora(generator.transformer)
    path = lora.save_lora(tmp_path / "x.safetensors", state, type(generator.pipe), preset.lora_rank, preset.alpha,
                          generator.lora_targets, {})
    theirs = comfy_deltas(path)
    scale = preset.alpha / preset.lora_rank
    assert scale == 5.0 and len(theirs) > 10
    for module, delta in theirs.items():
        ours = scale * state[f"{module}.lora_B.weight"].flatten(1) @ state[f"{module}.lora_A.weight"].flatten(1)
        torch.testing.assert_close(delta, ours, atol=1e-6, rtol=1e-5, msg=module)


@pytest.fixture(scope="module")
def trained(tiny_models, tmp_path_factory):
    generator, vlm = tiny_models
    result = optimize.optimize(generator, vlm, "a tropical beach", QA, steps=3, progress=False, eval_seeds=1)
    path = tmp_path_factory.mktemp("spec") / "beach.safetensors"
    save_result(result, path, generator, "a tropical beach", QA, "horizon at y=0.35", seed=0)
    return result, path


def test_modelspec_keys_sit_beside_ours(trained):
    result, path = trained
    tensors, header = lora.read_lora(path)
    spec = modelspec.read(header)
    assert spec["sai_model_spec"] == "1.0.1" and spec["architecture"] == "flux-1-schnell/lora"
    assert spec["implementation"].startswith("https://") and spec["resolution"] == "112x112"
    assert "a tropical beach" in spec["title"] and "horizon at y=0.35" in spec["description"]
    assert QA[0][0] in spec["description"] and "scale 1.0" in spec["usage_hint"]
    assert datetime.datetime.fromisoformat(spec["date"]).tzinfo is not None
    assert spec["hash_sha256"] == modelspec.tensor_hash(tensors) and spec["hash_sha256"].startswith("0x")
    thumb = modelspec.thumbnail_image(spec["thumbnail"])
    after = result.unseen.images_lora[0]
    assert thumb.size == after.size  # 112 px: already under the thumbnail's 128
    assert np.abs(np.asarray(thumb, dtype=int) - np.asarray(after, dtype=int)).max() == 0  # PNG: lossless
    assert len(spec["thumbnail"]) < 60_000
    assert lora.lora_metadata(path)["prompt"] == "a tropical beach"  # ours still there


def test_the_hash_is_of_the_weights_not_the_header(tmp_path):
    tensors = {"transformer.x.lora_A.weight": torch.ones(2, 3), "transformer.x.lora_B.weight": torch.zeros(3, 2)}
    assert modelspec.tensor_hash(tensors) == modelspec.tensor_hash(dict(tensors))
    changed = tensors | {"transformer.x.lora_B.weight": torch.full((3, 2), 1e-3)}
    assert modelspec.tensor_hash(changed) != modelspec.tensor_hash(tensors)


def test_a_strangers_thumbnail_is_not_rendered():
    assert modelspec.thumbnail_image("javascript:alert(1)") is None
    assert modelspec.thumbnail_image("data:image/png;base64,not-base64!") is None
    big = modelspec.thumbnail_url(Image.new("RGB", (900, 900)), side=900)
    assert modelspec.thumbnail_image(big) is None
    assert modelspec.thumbnail_image(modelspec.thumbnail_url(Image.new("RGB", (300, 200)))).size == (128, 85)


@pytest.mark.slow  # three LoRA runs (10, 10 and 20 steps) compared step by step (3 s)
def test_ten_plus_ten_steps_continue_the_twenty_step_run(tiny_models, tmp_path):
    """From a saved 10-step LoRA, 10 more steps see exactly the weights and noise of steps 11-20 of one 20-step
    run: the first continued step's loss equals step 11's. The weights then differ by Adam's moments only, which
    a LoRA file does not hold (the continued run starts AdamW afresh, as LoRA trainers do)."""
    generator, vlm = tiny_models
    cond = generator.encode("a beach")
    whole = optimize.optimize(generator, vlm, cond, QA, steps=20, progress=False, eval_seeds=0, seed=7)
    first = optimize.optimize(generator, vlm, cond, QA, steps=10, progress=False, eval_seeds=0, seed=7)
    parent_path = save_result(first, tmp_path / "ten.safetensors", generator, "a beach", QA, seed=7)
    parent = lora.read_parent(parent_path, generator.transformer, "tiny")
    assert (parent.steps, parent.rank, parent.seed) == (10, 4, 7)
    second = optimize.optimize(generator, vlm, cond, QA, steps=10, progress=False, eval_seeds=0, seed=7, init=parent)
    assert second.history[0].loss == pytest.approx(whole.history[10].loss, rel=1e-5)
    assert second.history[0].loss != pytest.approx(first.history[0].loss, rel=1e-3)  # not a fresh start
    # The same 10 continued steps from the in-memory weights: the file round trip changes nothing but rounding.
    memory = lora.Parent({k: v * (5 if ".lora_B." in k else 1) for k, v in first.state_dict.items()}, 4, 10, "", "m")
    again = optimize.optimize(generator, vlm, cond, QA, steps=10, progress=False, eval_seeds=0, seed=7, init=memory)
    for key in whole.state_dict:
        torch.testing.assert_close(second.state_dict[key], again.state_dict[key], atol=1e-5, rtol=1e-4)
    assert max((second.state_dict[k] - whole.state_dict[k]).abs().max() for k in whole.state_dict) > 1e-4
    path = save_result(second, tmp_path / "twenty.safetensors", generator, "a beach", QA, seed=7)
    meta = lora.lora_metadata(path)
    assert (meta["steps"], meta["total_steps"]) == (10, 20)
    assert meta["parent_sha256"] == modelspec.read(lora.read_lora(parent_path)[1])["hash_sha256"]


def test_init_lora_on_the_cli_and_its_refusals(tiny_models, tmp_path, capsys):
    base = ["--preset", "tiny", "--prompt", "a beach", "--control", "horizon", "--y", "0.4", "--eval-seeds", "0"]
    parent = tmp_path / "p.safetensors"
    code, out, err = run_main(optimize_cmd.main, [*base, "--steps", "2", "--seed", "3", "--out", str(parent)], capsys)
    assert code in (0, None), err
    child = tmp_path / "c.safetensors"
    code, out, err = run_main(optimize_cmd.main,
                              [*base, "--steps", "3", "--init-lora", str(parent), "--out", str(child)],
                              capsys)
    assert code in (0, None), err
    assert "3 steps, 5 in all with p.safetensors" in out
    meta = lora.lora_metadata(child)
    assert (meta["total_steps"], meta["seed"]) == (5, 3)  # the parent's seed when --seed is not given
    code, out, err = run_main(optimize_cmd.main, [*base, "--steps", "2", "--rank", "8", "--init-lora", str(parent),
                                              "--out", str(tmp_path / "r.safetensors")], capsys)
    assert code == 2 and err.strip().splitlines() == [
        "error: rank 8 differs from the rank 4 of LoRA file 'p.safetensors'"]
    tensors, header = lora.read_lora(parent)
    other = tmp_path / "sana.safetensors"
    save_file(tensors, str(other), metadata=header | {"dual_process.preset": "tiny-sana"})
    code, out, err = run_main(optimize_cmd.main, [*base, "--init-lora", str(other),
                                              "--out", str(tmp_path / "o.safetensors")], capsys)
    assert code == 2 and err.strip() == ("error: LoRA file 'sana.safetensors' was made for preset 'tiny-sana'; this "
                                         "model is preset 'tiny'")
    code, out, err = run_main(optimize_cmd.main, [*base, "--init-lora", str(tmp_path / "none.safetensors"),
                                              "--out", str(tmp_path / "n.safetensors")], capsys)
    assert code == 2 and "none.safetensors" in err and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_a_parent_with_other_targets_is_refused_naming_a_module(tiny_models, tmp_path):
    generator, vlm = tiny_models
    try:
        torch.manual_seed(0)
        lora.add_lora(generator.transformer, 4, 20.0, ("to_q", "to_k"))
        state = lora.lora_state_dict(generator.transformer)
    finally:
        lora.remove_all_lora(generator.transformer)
    path = lora.save_lora(tmp_path / "qk.safetensors", state, type(generator.pipe), 4, 20.0, ("to_q", "to_k"),
                          {"preset": "tiny"})
    parent = lora.read_parent(path, generator.transformer, "tiny")
    with pytest.raises(ValueError, match=r"LoRA file 'qk.safetensors' lacks '.*', which this run trains: it was "
                                         r"made with other LoRA targets"):
        optimize.optimize(generator, vlm, "a beach", QA, steps=1, progress=False, eval_seeds=0, init=parent)
    assert not getattr(generator.transformer, "peft_config", None)  # nothing left behind


# ---------- several controls in one overlay ----------------------------------------------------------------------


def test_palette_and_line_weight_are_stacked_not_drawn_over_each_other():
    size = (112, 112)
    parts = [(CONTROLS["palette"], palette.Spec.from_preset("retro")), (CONTROLS["line-weight"], line_weight.Spec(4))]
    alone = [np.asarray(c.render(s, size)) for c, s in parts]
    assert clashes([("palette", alone[0]), ("line-weight", alone[1])])  # in their own places they would clash
    placed = layout.combine(parts, size)
    lifted = placed.specs[1]
    assert lifted.lift > 0 and line_weight.stroke_box(lifted, size)[3] < 112 - palette.strip_rows(parts[0][1], 112)
    layers = [("palette", np.asarray(parts[0][0].render(placed.specs[0], size))),
              ("line-weight", np.asarray(parts[1][0].render(lifted, size)))]
    assert clashes(layers) == []
    overlay = np.asarray(placed.overlay)
    for _, layer in layers:  # every drawn pixel of each mark is in the combined overlay, unchanged
        drawn = layer[..., 3] > 0
        assert np.array_equal(overlay[drawn], layer[drawn])
    assert [q for q, _ in placed.questions] == [palette.QUESTION, line_weight.QUESTION]
    assert placed.descriptions[1].endswith("px higher")


@pytest.mark.parametrize("y", [0.15, 0.33, 0.5, 0.7, 0.8])
@pytest.mark.parametrize("px", [1, 4, 11])
def test_any_accepted_layout_has_no_overlap(y, px):
    size = (112, 112)
    parts = [(CONTROLS["palette"], palette.Spec.from_preset("retro")), (CONTROLS["horizon"], horizon.Spec(y)),
             (CONTROLS["line-weight"], line_weight.Spec(px))]
    try:
        placed = layout.combine(parts, size)
    except ValueError as exc:
        assert "overlays overlap" in str(exc) and "horizon" in str(exc)
        return
    layers = [(c.name, np.asarray(c.render(s, size))) for (c, _), s in zip(parts, placed.specs, strict=True)]
    assert clashes(layers) == []
    assert (np.asarray(placed.overlay)[..., 3] > 0).sum() == sum((la[..., 3] > 0).sum() for _, la in layers)


def test_a_clash_is_refused_naming_both_controls():
    parts = [(CONTROLS["palette"], palette.Spec.from_preset("retro")), (CONTROLS["horizon"], horizon.Spec(0.95))]
    with pytest.raises(ValueError, match=r"^the palette and horizon overlays overlap \(\d+ pixels around x=0.50, "
                                         r"y=0.9\d of the image\): move one of them"):
        layout.combine(parts, (112, 112))
    with pytest.raises(ValueError, match="the horizon control is asked for twice"):
        layout.combine([parts[1], parts[1]], (112, 112))


def test_every_control_can_be_combined_in_the_app_by_its_settings():
    """The canvas belongs to the page's Control; a combined horizon takes its height and tilt from settings, a
    combined depth its two points, so any two controls can go together (when their marks do not overlap)."""
    drawn_depth = np.asarray(CONTROLS["depth"].example().drawing)
    both = build(["depth", "horizon"], 112, {"horizon_y": 0.2, "horizon_tilt": 5}, drawing=drawn_depth)
    assert both.name == "horizon + depth" and both.controls[0] == "horizon at y=0.20, tilt 5.0 deg"
    assert [q for q, _ in both.questions] == [horizon.QUESTION, depth.CONTROL.question]
    points = build(["horizon", "depth"], 112,
                   {"point_a": "0.2, 0.8", "point_b": " 0.8,0.6", "depth_relation": "background"},
                   drawing=np.asarray(horizon.render(horizon.Spec(0.3), (112, 112))))
    assert points.controls[1] == "depth: A=(0.20, 0.80) background vs B=(0.80, 0.60)"
    alone = build(["palette", "horizon"], 112, {"palette_colors": "#e63946 #2a9d8f", "horizon_y": 0.4})
    assert alone.controls[1].startswith("horizon at y=0.40")
    two = "#e63946 #2a9d8f"
    with pytest.raises(ValueError, match=r"^combined control horizon needs Horizon height in its settings \(the "
                                         r"canvas is the Control's\)$"):
        build(["palette", "horizon"], 112, {"palette_colors": two, "horizon_y": " "})
    with pytest.raises(ValueError, match="^combined control depth needs Point A and Point B in its settings"):
        build(["palette", "depth"], 112, {"palette_colors": two})
    with pytest.raises(ValueError, match="^combined control depth: Point A 'x' must be two numbers separated by a "
                                         "comma"):
        build(["palette", "depth"], 112, {"palette_colors": two, "point_a": "x", "point_b": "0.5,0.5"})
    with pytest.raises(ValueError, match=r"^combined control horizon: horizon height 1.5 is outside \(0, 1\)"):
        build(["palette", "horizon"], 112, {"palette_colors": two, "horizon_y": 1.5})
    # As the Control itself, a blank canvas still asks for the drawing first, unless the height is set.
    with pytest.raises(ValueError, match="the canvas is blank: draw the horizon"):
        build(["horizon"], 112, {})
    assert build(["horizon"], 112, {"horizon_y": 0.6}).spec == horizon.Spec(0.6, 0.0)


def test_two_controls_on_the_cli_ask_both_and_list_both(tmp_path, capsys):
    out = tmp_path / "two.safetensors"
    code, stdout, err = run_main(optimize_cmd.main, ["--preset", "tiny", "--prompt", "a beach", "--control", "horizon",
                                                 "--y", "0.33", "--control", "palette", "--palette", "retro",
                                                 "--steps", "1", "--eval-seeds", "0", "--out", str(out)], capsys)
    assert code in (0, None), err
    meta = lora.lora_metadata(out)
    assert [q for q, _ in meta["questions"]] == [palette.QUESTION, horizon.QUESTION]  # registry order
    assert len(meta["controls"]) == 2 and meta["controls"][1].startswith("horizon at y=0.33")
    assert "palette" in modelspec.read(lora.read_lora(out)[1])["description"]
    code, stdout, err = run_main(optimize_cmd.main, ["--preset", "tiny", "--prompt", "a beach", "--control", "horizon",
                                                 "--y", "0.95", "--control", "palette", "--palette", "retro",
                                                 "--out", str(tmp_path / "x.safetensors")], capsys)
    assert code == 2 and err.startswith("error: the palette and horizon overlays overlap")
    code, stdout, err = run_main(optimize_cmd.main, ["--preset", "tiny", "--prompt", "a beach", "--control", "horizon",
                                                 "--y", "0.3", "--control", "horizon",
                                                 "--out", str(tmp_path / "x.safetensors")], capsys)
    assert code == 2 and "--control horizon is given twice" in err


def test_each_question_of_a_combined_run_improves_together(tiny_models, tmp_path):
    generator, vlm = tiny_models
    size = (generator.size, generator.size)
    placed = layout.combine([(CONTROLS["palette"], palette.Spec.from_preset("retro")),
                             (CONTROLS["horizon"], horizon.Spec(0.33))], size)
    overlay = np.asarray(placed.overlay)
    cond = generator.encode("a beach")
    seeds = [901, 902, 903]
    before = [held_out_loss(generator, vlm, cond, [qa], seeds, overlay) for qa in placed.questions]
    result = optimize.optimize(generator, vlm, cond, placed.questions, overlay=overlay, steps=20, progress=False,
                               eval_seeds=0)
    path = save_result(result, tmp_path / "both.safetensors", generator, "a beach", placed.questions)
    with lora.applied(generator.pipe, path, 1.0):
        after = [held_out_loss(generator, vlm, cond, [qa], seeds, overlay) for qa in placed.questions]
    assert all(a < b - 0.005 for a, b in zip(after, before, strict=True)), (before, after)


# ---------- stacked LoRAs -----------------------------------------------------------------------------------------


def test_two_loras_stack_at_their_own_scales_and_leave_the_pipeline_as_before(tiny_models, tmp_path):
    generator, _ = tiny_models
    preset = generator.preset
    paths = []
    for i in range(2):
        try:
            state = perturbed_lora(generator, seed=10 + i)
        finally:
            lora.remove_all_lora(generator.transformer)
        paths.append(lora.save_lora(tmp_path / f"l{i}.safetensors", state, type(generator.pipe), preset.lora_rank,
                                    preset.alpha, generator.lora_targets, {"preset": "tiny"}))
    before = np.asarray(generator.generate("a beach", 2))
    one = np.asarray(generator.generate("a beach", 2, lora_path=paths[0], scale=1.0))
    with_zero = np.asarray(generator.generate("a beach", 2, loras=[(paths[0], 1.0), (paths[1], 0.0)]))
    both = np.asarray(generator.generate("a beach", 2, loras=[(paths[0], 1.0), (paths[1], 0.7)]))
    assert np.array_equal(with_zero, one)  # the second at scale 0 adds nothing
    assert not np.array_equal(both, one) and not np.array_equal(both, before)
    assert np.array_equal(np.asarray(generator.generate("a beach", 2)), before)
    assert not getattr(generator.transformer, "peft_config", None)
    with pytest.raises(ValueError, match="scale"):
        generator.generate("a beach", 2, loras=[(paths[0], 1.0), (paths[1], 99.0)])
    assert np.array_equal(np.asarray(generator.generate("a beach", 2)), before)


def test_metadata_of_a_run_is_json_readable(trained):
    _, path = trained
    side = json.loads(optimize.sidecar_path(path).read_text())
    assert side["controls"] == ["horizon at y=0.35"] and side["total_steps"] == 3
