"""What keeps the picture: the judge's views, the preservation term, several noises per step, and the guard."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import lora, steering
from pipelines.optimize import evaluate_unseen, optimize, step_seeds, train_seed, unseen_seeds
from pipelines.vlm import to_pil

QA = [("Is the horizon of the scene aligned with the red line? Answer with Yes or No.", "Yes")]


def landscape(horizon_row: int = 40, size: int = 112) -> torch.Tensor:
    """Blue sky over green ground with a red line drawn on the boundary, (1, 3, size, size)."""
    pixels = torch.zeros(1, 3, size, size)
    pixels[0, 2, :horizon_row] = 0.9
    pixels[0, 1, horizon_row:] = 0.6
    pixels[0, :, horizon_row - 1:horizon_row + 1] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    return pixels


def red_rows(view: torch.Tensor) -> np.ndarray:
    r, g, b = view[0].detach()
    return np.flatnonzero(((r > 0.6) & (g < 0.35) & (b < 0.35)).float().mean(1).numpy() > 0.5)


def ground_starts(view: torch.Tensor) -> int:
    green = view[0, 1].detach().mean(1).numpy()
    return int(np.flatnonzero(green > 0.3)[0])


def test_views_move_the_line_with_the_scene_so_the_question_stays_true():
    views = steering.judged_views(landscape(), steering.Views(count=8, noise=0.0, blur=0.0),
                                  torch.Generator().manual_seed(0))
    assert len(views) == 8 and all(v.shape == (1, 3, 112, 112) for v in views)
    rows = [red_rows(v) for v in views]
    assert len({int(r[0]) for r in rows}) > 3, "the views are not shifted or zoomed differently"
    for view, row in zip(views, rows, strict=True):
        # The line sits on the boundary in every view: the sky ends where the line is.
        assert abs(int(row[-1]) + 1 - ground_starts(view)) <= 2


def test_views_pass_the_gradient_and_zero_views_is_the_image_itself():
    pixels = landscape().requires_grad_(True)
    views = steering.judged_views(pixels, steering.Views(count=3), torch.Generator().manual_seed(1))
    torch.stack([v.sum() for v in views]).sum().backward()
    assert pixels.grad is not None and float(pixels.grad.abs().sum()) > 0
    assert steering.judged_views(pixels, steering.Views(count=0), torch.Generator())[0] is pixels


def test_colour_distance_ignores_layout_but_not_colours():
    image = landscape(40)
    moved = landscape(80)  # the horizon moved: more ground, same colours
    night = landscape(40) * 0.3  # the same layout, other colours
    assert float(steering.colour_distance(image, image)) == 0.0
    assert float(steering.colour_distance(image, torch.flip(image, dims=[2]))) == pytest.approx(0.0, abs=1e-6)
    assert float(steering.colour_distance(image, night)) > 3 * float(steering.colour_distance(image, moved))


def test_keep_loss_counts_texture_the_base_did_not_have():
    base = landscape()
    grid = base.clone()
    grid[..., ::2, ::2] = grid[..., ::2, ::2] * 0.5  # a tiling, the colours nearly kept
    smoother = torch.nn.functional.avg_pool2d(base, 3, stride=1, padding=1, count_include_pad=False)
    assert float(steering.keep_loss(grid, base)) > 5 * float(steering.keep_loss(smoother, base))
    assert float(steering.keep_loss(base, base)) == 0.0


def photo(seed: int, texture: bool = False) -> Image.Image:
    pixels = landscape(30 + 10 * seed)
    pixels[0, 0] += 0.05 * seed
    if texture:
        pixels[..., ::2, ::2] *= 0.4
    return to_pil(pixels.clamp(0, 1))


def test_guard_warns_about_a_grid_a_collapse_and_a_lost_prompt_and_not_about_a_clean_run():
    before = [photo(s) for s in range(4)]
    clean = steering.guard(before, [photo(s + 1) for s in range(4)], (0.9, 0.88))
    assert clean.warnings == [] and "keep" in clean.line()
    hacked = steering.guard(before, [photo(2, texture=True)] * 4, (0.95, 0.4))
    assert len(hacked.warnings) == 3
    line = hacked.line()
    assert line.startswith("the judge may be fooled") and "grid texture" in line and "collapsed" in line
    assert "P 0.95 -> 0.40" in line
    assert json.loads(json.dumps(hacked.as_dict()))["texture_ratio"] > steering.TEXTURE_WARN


def test_guard_catches_soft_tiles_that_the_grid_measure_misses():
    # A 100-step palette LoRA painted the toy beach with blotches about 20 px wide (EVALUATION.md, Palette): smooth,
    # so the 3x3 high-frequency energy of a picture with fine grain barely moves; the mid-frequency band sees them,
    # and a moved horizon does not.
    def grained(pixels: torch.Tensor, seed: int) -> Image.Image:
        noise = 0.03 * torch.randn(pixels.shape, generator=torch.Generator().manual_seed(seed))
        return to_pil((pixels + noise).clamp(0, 1))

    rows, cols = np.mgrid[0:112, 0:112]
    bumps = torch.from_numpy(0.2 * np.sin(2 * np.pi * rows / 20) * np.sin(2 * np.pi * cols / 20)).float()
    before = [grained(landscape(30 + 10 * s), s) for s in range(4)]
    blotchy = []
    for s in range(4):
        pixels = landscape(30 + 10 * s)
        pixels[0, :, 60:] *= 1 + bumps[60:]
        blotchy.append(grained(pixels, s + 10))
    tiled = steering.guard(before, blotchy)
    assert tiled.texture < steering.TEXTURE_WARN < steering.BLOTCH_WARN < tiled.blotches, tiled.as_dict()
    assert "soft tiles" in tiled.line() and tiled.as_dict()["blotch_ratio"] == round(tiled.blotches, 3)
    moved = steering.guard(before, [grained(landscape(50 + 10 * s), s + 20) for s in range(4)])
    assert moved.blotches < steering.BLOTCH_WARN and moved.warnings == [], moved.as_dict()


def test_the_guard_catches_a_hacked_lora_on_the_toy_world(toy_models):
    generator, vlm = toy_models
    cond = generator.encode("a beach")
    seeds = unseen_seeds(0, 3)
    lora.add_lora(generator.transformer, 4, 4.0, generator.lora_targets)
    try:
        calm = evaluate_unseen(generator, vlm, cond, QA, seeds, prompt="a beach")
        assert calm.guard.warnings == []  # a fresh LoRA (B = 0) is the base model
        with torch.no_grad():  # a LoRA far off its base: the pictures turn to texture, as hacked ones do
            g = torch.Generator().manual_seed(0)
            for name, p in generator.transformer.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        hacked = evaluate_unseen(generator, vlm, cond, QA, seeds, prompt="a beach")
    finally:
        lora.remove_all_lora(generator.transformer)
    assert hacked.guard.texture > steering.TEXTURE_WARN, hacked.guard.as_dict()
    assert "the judge may be fooled: the picture gained a grid texture" in hacked.line()


def test_several_noises_draw_distinct_seeds_never_the_unseen_ones():
    seeds = [s for step in range(1, 50) for s in step_seeds(7, step, 4)]
    assert len(set(seeds)) == len(seeds)
    assert step_seeds(7, 3, 1) == [train_seed(7, 3)]
    assert not set(seeds) & set(unseen_seeds(7, 64))


def test_optimize_with_views_noises_and_keep_records_them_and_trains(tiny_models):
    generator, vlm = tiny_models
    result = optimize(generator, vlm, "a beach", QA, steps=2, seed=3, eval_seeds=2, progress=False,
                      views=steering.Views(count=2), noises=2, keep=1.0)
    assert len(result.history) == 2 and all(np.isfinite(s.loss) for s in result.history)
    assert result.steering["noises"] == 2 and result.steering["views"]["count"] == 2
    assert result.unseen.guard is not None
    assert any(float(t.abs().sum()) > 0 for k, t in result.state_dict.items() if "lora_B" in k)


@pytest.mark.parametrize("flag,value,message", [("--noises", "0", "noises per step 0"),
                                                ("--views", "99", "judged views 99"),
                                                ("--keep", "-1", "preservation weight -1")])
def test_bad_steering_flags_are_one_line(tmp_path, flag, value, message):
    out = subprocess.run([sys.executable, "-m", "pipelines.optimize", "--preset", "tiny", "--prompt", "a beach",
                          "--control", "horizon", "--y", "0.3", flag, value, "--out", str(tmp_path / "x.safetensors")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and message in out.stderr + out.stdout
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "x.safetensors").exists()



def test_what_is_held_is_what_the_visual_prompts_do_not_change():
    from overlays import CONTROLS

    assert steering.held([CONTROLS["horizon"].changes]) == ("colours", "texture")
    assert steering.held([CONTROLS["palette"].changes]) == ("layout", "texture")
    assert steering.held([CONTROLS["palette"].changes, CONTROLS["depth"].changes]) == ("texture",)
    image = landscape(40)
    recoloured = image * 0.5  # what a palette asks for: the same layout in other colours
    moved = landscape(80)
    hold_layout = ("layout", "texture")
    assert float(steering.keep_loss(recoloured, image, hold_layout)) < float(steering.keep_loss(moved, image,
                                                                                                 hold_layout))
    assert float(steering.keep_loss(recoloured, image)) > float(steering.keep_loss(moved, image))
