"""A toy world where the method can be seen to work offline: landscapes with an analytic ground truth.

Scenes are a sky above a horizon line and ground below it, coloured by the prompt's scheme. Because the
scenes are drawn here, their horizon and colours are known exactly, and `horizon_of` / `scheme_of` /
`palette_distance` measure them back from pixels alone (for generated images, which have no ground truth).

    python -m pipelines.toy_world train --out assets/toy-world --seed 0

trains, with the architectures our loader and adapters use, a tiny Flux-shaped one-step generator of
such scenes and a tiny Qwen2.5-VL-shaped judge answering the horizon, palette and alignment questions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from overlays.colors import RGB, ciede2000_lab, srgb_to_lab
from overlays.palette import extract_palette

SIZE = 112  # Flux VAE /8 -> 14x14 latents (49 packed tokens); a multiple of 28, so Qwen needs no resize
H_RANGE = (0.15, 0.85)
MAX_TILT = 4.0
HORIZON_TOLERANCE = 0.06  # the judge says Yes iff the red line is within this fraction of the height
PALETTE_THRESHOLD = 10.0  # mean CIEDE2000 below which an image "matches" a palette (see palette_distance)


@dataclass(frozen=True)
class ColorScheme:
    """Colours of one prompt's world: sky gradient top -> horizon, ground gradient horizon -> bottom."""

    sky_top: RGB
    sky_bottom: RGB
    ground_top: RGB
    ground_bottom: RGB
    texture: float  # 0..1: amplitude of the ground's streaky noise (the sky gets a fifth of it)
    sun: RGB | None = None  # a sun (or moon) can appear in this world


PROMPTS: dict[str, ColorScheme] = {
    "a beach at noon": ColorScheme((40, 110, 220), (150, 200, 245), (238, 218, 165), (205, 175, 115), 0.3,
                                   (255, 250, 215)),
    "a desert at sunset": ColorScheme((80, 35, 105), (250, 140, 60), (180, 95, 45), (120, 60, 32), 0.4,
                                      (255, 205, 90)),
    "a green field": ColorScheme((65, 135, 225), (195, 222, 245), (95, 170, 60), (35, 100, 25), 0.5),
    "a snowy plain": ColorScheme((135, 145, 170), (205, 210, 222), (250, 250, 252), (200, 212, 232), 0.15),
    "a lake at night": ColorScheme((5, 8, 30), (60, 70, 125), (15, 28, 55), (5, 12, 28), 0.2, (235, 235, 205)),
    "a lavender field": ColorScheme((110, 165, 230), (245, 205, 195), (160, 115, 205), (85, 50, 135), 0.5),
}
# What the app's fields open with on the `toy` preset: prompts this world can draw (presets.PAGE_DEFAULTS).
PAGE_DEFAULTS = {
    "visual": "a beach at noon", "apply": "a desert at sunset", "ask": "a green field",
    "ask_questions": "Does this image show a green field? Answer with Yes or No. | Yes",
    "lora": "a lake at night", "score": "a desert at sunset", "refine": "a lavender field",
}

TRUNK, CROWN = (85, 58, 35), (30, 78, 38)


@dataclass(frozen=True)
class Scene:
    """One landscape. h: horizon height as a fraction of the image height from the top, at the horizontal
    centre (the convention of overlays.horizon); tilt in degrees, positive = right side higher.
    sun: (x, y, radius) as fractions of the size; tree: (x, crown height above the horizon) as fractions."""

    prompt: str
    h: float
    tilt: float = 0.0
    seed: int = 0
    sun: tuple[float, float, float] | None = None
    tree: tuple[float, float] | None = None


def sample_scene(rng: np.random.Generator, prompt: str | None = None) -> Scene:
    """A random scene of `prompt` (a random prompt when None), the sun and a tree sometimes present."""
    prompt = prompt if prompt is not None else list(PROMPTS)[rng.integers(len(PROMPTS))]
    if prompt not in PROMPTS:
        raise ValueError(f"unknown toy-world prompt {prompt!r}; available: {', '.join(PROMPTS)}")
    h = float(rng.uniform(*H_RANGE))
    tilt = float(rng.uniform(-MAX_TILT, MAX_TILT))
    sun = None
    if PROMPTS[prompt].sun is not None and rng.random() < 0.5 and h > 0.3:
        r = float(rng.uniform(0.04, 0.08))
        # Wholly in the sky with a margin, so the sun never touches the horizon.
        sun = (float(rng.uniform(0.15, 0.85)), float(rng.uniform(r + 0.02, h - r - 0.08)), r)
    tree = None
    if rng.random() < 0.3:
        tree = (float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.08, min(0.3, h - 0.05))))
    return Scene(prompt, h, tilt, int(rng.integers(2**31)), sun, tree)


def _horizon_rows(h: float, tilt: float, size: int) -> np.ndarray:
    """Continuous row of the horizon at each column's centre (rows grow downwards)."""
    cols = np.arange(size) + 0.5
    return h * size - math.tan(math.radians(tilt)) * (cols - size / 2)


def _noise(rng: np.random.Generator, size: int, cells: tuple[int, int]) -> np.ndarray:
    """Smooth noise in about [-1, 1]: a coarse random grid upsampled bilinearly."""
    grid = rng.standard_normal(cells).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((size, size), Image.BILINEAR)
    return np.clip(np.asarray(img) / 1.5, -1, 1)


def render_colors(scheme: ColorScheme, h: float, tilt: float, size: int = SIZE, seed: int | None = None,
                  sun: tuple[float, float, float] | None = None,
                  tree: tuple[float, float] | None = None) -> np.ndarray:
    """(size, size, 3) float RGB in 0..255 of a scene; seed None draws no texture (the scheme's clean image)."""
    rows = np.arange(size, dtype=np.float64)[:, None] + 0.5
    horizon = _horizon_rows(h, tilt, size)[None, :]
    sky_t = np.clip(rows / np.maximum(horizon, 1), 0, 1)[..., None]
    ground_t = np.clip((rows - horizon) / np.maximum(size - horizon, 1), 0, 1)[..., None]
    sky = np.array(scheme.sky_top) * (1 - sky_t) + np.array(scheme.sky_bottom) * sky_t
    ground = np.array(scheme.ground_top) * (1 - ground_t) + np.array(scheme.ground_bottom) * ground_t
    if seed is not None:
        rng = np.random.default_rng(seed)
        # Ground: streaks stretched horizontally (furrows, ripples); sky: faint large clouds.
        streaks = 0.6 * _noise(rng, size, (28, 6)) + 0.4 * _noise(rng, size, (56, 14))
        ground = ground * (1 + 0.22 * scheme.texture * streaks[..., None])
        sky = sky + 40 * scheme.texture * 0.2 * _noise(rng, size, (4, 4))[..., None]
    # Antialiased edge: each pixel's share of sky is the part of its row span above the line.
    sky_share = np.clip(horizon - (rows - 0.5), 0, 1)[..., None]
    img = sky * sky_share + ground * (1 - sky_share)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    if sun is not None and scheme.sun is not None:
        sx, sy, sr = (v * size for v in sun)
        cover = np.clip(sr - np.hypot(xx - sx, yy - sy) + 0.5, 0, 1)[..., None]
        img = img * (1 - cover) + np.array(scheme.sun) * cover
    if tree is not None:
        tx, crown = tree[0] * size, tree[1] * size
        base = float(np.interp(tx, np.arange(size) + 0.5, horizon[0]))
        top = base - crown
        trunk = (np.abs(xx - tx) < 1.6) & (yy > top) & (yy < base + 0.06 * size)
        img[trunk] = TRUNK
        radius = max(3.0, 0.45 * crown)
        cover = np.clip(radius - np.hypot(xx - tx, yy - top) + 0.5, 0, 1)[..., None]
        img = img * (1 - cover) + np.array(CROWN) * cover
    return np.clip(img, 0, 255)


def render_scene(scene: Scene, size: int = SIZE) -> Image.Image:
    """The scene as an RGB image."""
    scheme = PROMPTS[scene.prompt]
    arr = render_colors(scheme, scene.h, scene.tilt, size, scene.seed, scene.sun, scene.tree)
    return Image.fromarray(np.rint(arr).astype(np.uint8), "RGB")


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """An RGB image as (H, W, 3) float in 0..255 (arrays in [0, 1] are scaled up)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64)
    arr = np.asarray(image, dtype=np.float64)
    return arr * 255 if arr.max() <= 1.0 else arr


def _fit_line(x: np.ndarray, y: np.ndarray, tol: float) -> tuple[float, float]:
    """Robust y = a + b x: Theil-Sen (resists up to ~29% outliers), then least squares on its inliers."""
    i, j = np.triu_indices(len(x), 1)
    slope = float(np.median((y[j] - y[i]) / (x[j] - x[i])))
    icept = float(np.median(y - slope * x))
    inliers = np.abs(y - icept - slope * x) < tol
    if inliers.sum() >= 2:
        slope, icept = np.polyfit(x[inliers], y[inliers], 1)
    return float(icept), float(slope)


def horizon_boundaries(image: Image.Image | np.ndarray, window: int = 2) -> np.ndarray:
    """Per column, the (sub-pixel) row where the colour changes most between the rows above and below."""
    arr = _as_array(image)
    height = arr.shape[0]
    # Two rows on each side average the texture out yet keep a smooth sky gradient (a ramp) below a step
    # edge; 3 columns are pooled for the same reason.
    padded = np.pad(arr, ((0, 0), (1, 1), (0, 0)), mode="edge")
    arr = (padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]) / 3
    csum = np.concatenate([np.zeros((1, *arr.shape[1:])), np.cumsum(arr, 0)])
    # Boundary between rows b-1 and b, kept away from the borders: a VAE decoder's padding leaves edges in the
    # first and last rows, and this world's horizons stay within 0.15..0.85 (+-4 px of tilt).
    margin = max(window, round(0.07 * height))
    b = np.arange(margin, height - margin + 1)
    above = (csum[b] - csum[b - window]) / window
    below = (csum[b + window] - csum[b]) / window
    score = np.linalg.norm(below - above, axis=-1)  # (len(b), W)
    k = score.argmax(0)
    cols = np.arange(score.shape[1])
    # Parabolic refinement around the peak for a sub-pixel boundary.
    k0, k2 = np.clip(k - 1, 0, len(b) - 1), np.clip(k + 1, 0, len(b) - 1)
    s0, s1, s2 = score[k0, cols], score[k, cols], score[k2, cols]
    denom = s0 - 2 * s1 + s2
    offset = np.where((denom < 0) & (k0 != k) & (k2 != k), 0.5 * (s0 - s2) / np.where(denom == 0, 1, denom), 0)
    return b[k] + np.clip(offset, -0.5, 0.5)


def horizon_of(image: Image.Image | np.ndarray) -> tuple[float, float]:
    """(horizon height at the horizontal centre as a fraction of the height, tilt in degrees), from pixels.

    Per column the strongest vertical colour edge, then a robust line fit: suns, trees and texture
    edges in a minority of columns do not move it.
    """
    arr = _as_array(image)
    height, width = arr.shape[:2]
    rows = horizon_boundaries(arr)
    x = np.arange(width) + 0.5
    icept, slope = _fit_line(x, rows, tol=2.0)
    return (icept + slope * width / 2) / height, math.degrees(math.atan(-slope))


def dominant_colors(image: Image.Image | np.ndarray, k: int = 5) -> list[RGB]:
    """The image's k dominant colours (k-means in CIELAB, biggest cluster first), on a 56 px subsample:
    16x fewer pixels, the same colours (the scenes are smooth), fast enough to label training images."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.rint(np.clip(_as_array(image), 0, 255)).astype(np.uint8), "RGB")
    return extract_palette(image, k, max_side=56)


def _pool(arr: np.ndarray, factor: int = 4) -> np.ndarray:
    h, w = arr.shape[0] // factor, arr.shape[1] // factor
    return arr[:h * factor, :w * factor].reshape(h, factor, w, factor, 3).mean((1, 3))


def scheme_distances(image: Image.Image | np.ndarray) -> dict[str, float]:
    """Per prompt: median CIEDE2000 between the image and that prompt's clean scene at the image's horizon."""
    arr = _as_array(image)
    size = arr.shape[0]
    h, tilt = horizon_of(arr)
    h = float(np.clip(h, 0.02, 0.98))
    lab = srgb_to_lab(_pool(arr))
    out = {}
    for prompt, scheme in PROMPTS.items():
        ref = srgb_to_lab(_pool(render_colors(scheme, h, tilt, size)))
        # The median ignores a sun, a tree and the pixels next to a slightly misplaced horizon.
        out[prompt] = float(np.median(ciede2000_lab(lab, ref)))
    return out


def scheme_of(image: Image.Image | np.ndarray) -> tuple[str, float]:
    """The prompt whose colour scheme is closest to the image's colours, and that distance (CIEDE2000)."""
    dist = scheme_distances(image)
    best = min(dist, key=dist.get)
    return best, dist[best]


def palette_distance(image: Image.Image | np.ndarray, colors: list[RGB] | tuple[RGB, ...]) -> float:
    """Mean CIEDE2000 from each of the image's 5 dominant colours to its nearest palette colour.

    0 when every dominant colour is in the palette. The toy judge is taught that an image "matches" a palette
    below PALETTE_THRESHOLD = 10: measured on 120 random scenes, a palette sampled from the scene's own scheme
    (`scheme_palette`) has a median of 4.5 (90% under 13, a sun or tree adds an unmatched colour); another
    prompt's scheme is 8-45 away (closest pairs: snowy plain vs lavender field, beach vs green field).
    """
    if not colors:
        raise ValueError("the palette is empty")
    dom = srgb_to_lab(np.array(dominant_colors(image), dtype=np.float64))
    pal = srgb_to_lab(np.array(colors, dtype=np.float64))
    return float(ciede2000_lab(dom[:, None], pal[None]).min(1).mean())


def scheme_palette(prompt: str, n: int = 6) -> list[RGB]:
    """n colours along the prompt's sky and ground gradients (half each): a palette its scenes match."""
    s = PROMPTS[prompt]
    out = []
    for (a, b), m in (((s.sky_top, s.sky_bottom), n // 2), ((s.ground_top, s.ground_bottom), n - n // 2)):
        for f in np.linspace(0, 1, m) if m > 1 else [0.5]:
            out.append(tuple(int(round(x + (y - x) * f)) for x, y in zip(a, b, strict=True)))
    return out


# =========================================================================== training
# Everything below needs torch/diffusers/transformers; the scene code above is numpy/PIL only.

def _log(msg: str) -> None:
    print(msg, flush=True)


class _Clock:
    """Wall-clock budget of one stage: loops run until it is spent, learning rates follow it."""

    def __init__(self, budget_s: float):
        self.start, self.budget = time.perf_counter(), budget_s

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def done(self) -> bool:
        return self.elapsed >= self.budget

    def lr_factor(self, step: int, warmup: int = 100) -> float:
        """Linear warm-up, then a cosine decay to 5% over the remaining time."""
        frac = min(1.0, self.elapsed / self.budget)
        return min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def _set_lr(opt, base: float, factor: float) -> None:
    for group in opt.param_groups:
        group["lr"] = base * factor


def render_pool(rng: np.random.Generator, n: int) -> tuple[list[Scene], np.ndarray]:
    """n random scenes and their images as a uint8 (n, H, W, 3) array."""
    scenes = [sample_scene(rng) for _ in range(n)]
    return scenes, np.stack([np.asarray(render_scene(s)) for s in scenes])


def _to_tensor(images: np.ndarray):
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1], the VAE's range."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def _psnr(a, b) -> float:
    """PSNR in dB of images in [-1, 1]."""
    mse = float((((a.clamp(-1, 1) - b) / 2) ** 2).mean())
    return 10 * math.log10(1 / max(mse, 1e-12))


def train_vae(vae, images: np.ndarray, held_out: np.ndarray, held_scenes: list[Scene], budget_s: float) -> dict:
    """Reconstruction (MSE) + a small KL term; then shift/scale set from the latents' statistics (as Flux's VAE
    config carries its own), so that the scaled latents the transformer sees have mean 0 and std 1."""
    import torch

    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    clock, step, rng = _Clock(budget_s), 0, np.random.default_rng(1)
    while not clock.done:
        idx = rng.integers(len(images), size=16)
        x = _to_tensor(images[idx])
        if rng.random() < 0.5:
            x = x.flip(-1)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        kl = 0.5 * (post.mean**2 + post.var - 1 - post.logvar).mean()
        loss = torch.nn.functional.mse_loss(rec, x) + 1e-4 * kl
        _set_lr(opt, 2e-3, clock.lr_factor(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 200 == 0:
            _log(f"  vae step {step}  loss {loss.item():.5f}  kl {kl.item():.3f}  {clock.elapsed:.0f}s")
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        x = _to_tensor(held_out)
        rec = torch.cat([vae.decode(vae.encode(x[i:i + 32]).latent_dist.mode()).sample for i in range(0, len(x), 32)])
        z = torch.cat([vae.encode(_to_tensor(images[i:i + 64])).latent_dist.mode() for i in range(0, 1024, 64)])
    rec_img = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    herr = [abs(horizon_of(r)[0] - s.h) for r, s in zip(rec_img, held_scenes, strict=True)]
    shift, std = float(z.mean()), float(z.std())
    vae.register_to_config(shift_factor=shift, scaling_factor=1.0 / std)
    return {"steps": step, "seconds": round(clock.elapsed, 1), "held_out_psnr_db": round(_psnr(rec, x), 2),
            "held_out_horizon_error_mean": round(float(np.mean(herr)), 4),
            "held_out_horizon_error_max": round(float(np.max(herr)), 4),
            "shift_factor": shift, "scaling_factor": 1.0 / std}


def encode_latents(pipe, images: np.ndarray):
    """Packed, scaled latents (N, 49, 64): exactly what FluxGenerator's transformer takes and decode undoes."""
    import torch

    vae, out = pipe.vae, []
    with torch.no_grad():
        for i in range(0, len(images), 64):
            z = vae.encode(_to_tensor(images[i:i + 64])).latent_dist.mode()
            z = (z - vae.config.shift_factor) * vae.config.scaling_factor
            out.append(pipe._pack_latents(z, z.shape[0], z.shape[1], z.shape[2], z.shape[3]))
    return torch.cat(out)


class _FluxCall:
    """The transformer called as FluxGenerator.velocity calls it, for a batch of prompt indices."""

    def __init__(self, pipe, size: int = SIZE):
        import torch

        embeds, pooled, _ = pipe.encode_prompt(list(PROMPTS), prompt_2=None, max_sequence_length=32)
        self.embeds, self.pooled = embeds.detach(), pooled.detach()
        h = size // pipe.vae_scale_factor // 2
        ids = torch.zeros(h, h, 3)
        ids[..., 1] = torch.arange(h)[:, None]
        ids[..., 2] = torch.arange(h)[None, :]
        self.img_ids = ids.reshape(h * h, 3)
        self.txt_ids = torch.zeros(embeds.shape[1], 3)

    def __call__(self, transformer, x, sigma, prompt_idx):
        return transformer(hidden_states=x, timestep=sigma, pooled_projections=self.pooled[prompt_idx],
                           encoder_hidden_states=self.embeds[prompt_idx], txt_ids=self.txt_ids,
                           img_ids=self.img_ids, guidance=None, return_dict=False)[0]


def train_flow(transformer, call: _FluxCall, latents, prompt_idx, budget_s: float) -> dict:
    """Rectified flow: x_t = (1 - t) x0 + t noise, v = noise - x0, t logit-normal (as SD3/Flux train)."""
    import torch

    transformer.train().requires_grad_(True)
    opt = torch.optim.AdamW(transformer.parameters(), lr=1e-3, weight_decay=0.0)
    clock, step, losses = _Clock(budget_s), 0, []
    gen = torch.Generator().manual_seed(2)
    while not clock.done:
        idx = torch.randint(len(latents), (64,), generator=gen)
        x0, p = latents[idx], prompt_idx[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.sigmoid(torch.randn(len(idx), generator=gen))
        x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
        loss = torch.nn.functional.mse_loss(call(transformer, x_t, t, p), noise - x0)
        _set_lr(opt, 1e-3, clock.lr_factor(step, 200))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 250 == 0:
            _log(f"  flow step {step}  loss {np.mean(losses[-250:]):.4f}  {clock.elapsed:.0f}s")
    transformer.eval().requires_grad_(False)
    return {"steps": step, "seconds": round(clock.elapsed, 1), "final_loss": round(float(np.mean(losses[-200:])), 4)}


def euler_sample(transformer, call: _FluxCall, noise, prompt_idx, steps: int):
    """The teacher's sampler: Euler on sigmas 1 -> 0 in equal steps (schnell's schedule with shift 1)."""
    import torch

    sigmas = torch.linspace(1, 0, steps + 1)
    x = noise
    with torch.no_grad():
        for i in range(steps):
            s = torch.full((len(x),), float(sigmas[i]))
            x = x + float(sigmas[i + 1] - sigmas[i]) * call(transformer, x, s, prompt_idx)
    return x


def distill(student, teacher, call: _FluxCall, budget_s: float, teacher_steps: int, n_pairs: int) -> dict:
    """One step from sigma = 1: train x0_student = noise - v_student(noise, 1) to the teacher's sample from the
    same noise (what FluxPipeline(num_inference_steps=1) and our one-step training path compute)."""
    import torch

    clock = _Clock(budget_s)
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn((n_pairs, 49, 64), generator=gen)
    pidx = torch.randint(len(PROMPTS), (n_pairs,), generator=gen)
    target = torch.cat([euler_sample(teacher, call, noise[i:i + 256], pidx[i:i + 256], teacher_steps)
                        for i in range(0, n_pairs, 256)])
    pairs_s = clock.elapsed
    _log(f"  {n_pairs} teacher samples ({teacher_steps} Euler steps) in {pairs_s:.0f}s")
    student.train().requires_grad_(True)
    opt = torch.optim.AdamW(student.parameters(), lr=5e-4, weight_decay=0.0)
    step, losses, ones = 0, [0.0], torch.ones(64)
    while not clock.done:
        idx = torch.randint(n_pairs, (64,), generator=gen)
        x0 = noise[idx] - call(student, noise[idx], ones, pidx[idx])
        loss = torch.nn.functional.mse_loss(x0, target[idx])
        _set_lr(opt, 5e-4, clock.lr_factor(step, 50))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 250 == 0:
            _log(f"  distil step {step}  loss {np.mean(losses[-250:]):.4f}  {clock.elapsed:.0f}s")
    student.eval().requires_grad_(False)
    return {"steps": step, "seconds": round(clock.elapsed, 1), "teacher_steps": teacher_steps,
            "pairs": n_pairs, "final_loss": round(float(np.mean(losses[-200:])), 4)}


def decode_images(pipe, latents) -> np.ndarray:
    """Packed scaled latents -> uint8 (N, H, W, 3), as the pipeline decodes them."""
    import torch

    vae, out = pipe.vae, []
    with torch.no_grad():
        for i in range(0, len(latents), 64):
            z = pipe._unpack_latents(latents[i:i + 64], SIZE, SIZE, pipe.vae_scale_factor)
            x = vae.decode(z / vae.config.scaling_factor + vae.config.shift_factor).sample
            out.append(((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def image_stats(images: np.ndarray, prompts: list[str]) -> dict:
    """Horizon spread and scheme accuracy of generated images (by the analytic measures)."""
    hs = [horizon_of(im)[0] for im in images]
    schemes = [scheme_of(im) for im in images]
    return {"horizon_mean": round(float(np.mean(hs)), 3), "horizon_sd": round(float(np.std(hs)), 3),
            "horizon_in_range": round(float(np.mean([0.1 <= h <= 0.9 for h in hs])), 3),
            "scheme_accuracy": round(float(np.mean([s == p for (s, _), p in zip(schemes, prompts, strict=True)])), 3),
            "scheme_distance_median": round(float(np.median([d for _, d in schemes])), 2)}


def toy_preset(generator_dir: str | Path, vlm_dir: str | Path):
    """The `toy` preset pointed at other toy-world folders (what the app's loader takes)."""
    from .presets import get_preset

    return dataclasses.replace(get_preset("toy"), generator_source=str(Path(generator_dir).resolve()),
                               vlm_source=str(Path(vlm_dir).resolve()))


def stock_generations(generator, prompts: list[str], seeds: list[int]) -> list[np.ndarray]:
    """One-step images from the stock FluxPipeline (through FluxGenerator.generate), one per (prompt, seed)."""
    return [np.asarray(generator.generate(p, s)) for p, s in zip(prompts, seeds, strict=True)]


# --------------------------------------------------------------------------- the judge
def build_judge(seed: int):
    """A Qwen2.5-VL of the tiny build's kind (same tokenizer, chat template, image processor), with a wider
    vision tower (4 layers x 64): the tiny one's 2 x 32 is too small to read a horizon."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from . import random_models

    random_models.seeded(seed)
    base, tokenizer, image_processor = random_models.build_qwen_vl("tiny")
    ids = {n: getattr(base.config, n) for n in ("image_token_id", "video_token_id", "vision_start_token_id",
                                                 "vision_end_token_id")}
    config = random_models.qwen_config("tiny", len(tokenizer), ids, (tokenizer.pad_token_id, tokenizer.eos_token_id))
    vc = config.vision_config
    vc.depth, vc.hidden_size, vc.intermediate_size, vc.num_heads, vc.fullatt_block_indexes = 4, 64, 128, 4, [3]
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer, image_processor


@dataclass
class _Base:
    """An image the judge is asked about, with its labels from the ground truth or the analytic measures."""

    image: np.ndarray  # uint8 (H, W, 3)
    h: float | None  # None: no single horizon (striped negatives)
    scheme: str | None
    _dominant: list[RGB] | None = None

    def dominant(self) -> list[RGB]:
        if self._dominant is None:
            self._dominant = dominant_colors(self.image)
        return self._dominant


def striped_image(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, list[float]]:
    """A reward-hacking look-alike: 3-6 horizontal bands of landscape colours; returns the image and the
    heights of its band edges (any of which a small judge might take for the horizon)."""
    n = int(rng.integers(3, 7))
    edges = np.sort(rng.uniform(0.08, 0.92, n - 1))
    schemes = list(PROMPTS.values())
    colours = []
    for _ in range(n):
        s = schemes[rng.integers(len(schemes))]
        colours.append(np.array([s.sky_top, s.sky_bottom, s.ground_top, s.ground_bottom][rng.integers(4)]))
    rows = (np.arange(size) + 0.5) / size
    band = np.searchsorted(edges, rows)
    img = np.stack(colours)[band][:, None, :].repeat(size, 1)
    img = img * (1 + 0.05 * rng.standard_normal((size, size, 1)))
    return np.clip(img, 0, 255).round().astype(np.uint8), [float(e) for e in edges]


def _palette_pick(rng: np.random.Generator, base: _Base, presets: list[list[RGB]]) -> list[RGB]:
    """A palette to ask about: the image's own colours, its scheme's, another scheme's, a preset, or random."""
    names = list(PROMPTS)
    u = rng.random()
    if u < 0.25:
        colors = list(base.dominant())
        jitter = rng.uniform(0, 25) if rng.random() < 0.5 else 0.0  # near the threshold both ways
        colors = [tuple(int(np.clip(c + rng.normal(0, jitter), 0, 255)) for c in col) for col in colors]
    elif u < 0.5 and base.scheme:
        colors = scheme_palette(base.scheme, int(rng.integers(4, 7)))
    elif u < 0.75:
        colors = scheme_palette(names[rng.integers(len(names))], int(rng.integers(4, 7)))
    elif u < 0.87:
        colors = list(presets[rng.integers(len(presets))])
    else:
        colors = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(int(rng.integers(3, 7)))]
    colors = colors[:8] if len(colors) >= 2 else colors * 2
    order = rng.permutation(len(colors))
    return [colors[i] for i in order]


def make_item(rng: np.random.Generator, kind: str, base: _Base, presets: list[list[RGB]]) -> dict:
    """One (pixels, question, answer) row of a kind, with the auxiliary targets of the horizon head."""
    import torch

    from overlays import composite, horizon, palette

    from .optimize import prompt_question

    pixels = torch.from_numpy(np.array(base.image)).permute(2, 0, 1)[None].float() / 255
    aux = {"h": base.h, "line": None, "scheme": base.scheme}
    if kind == "horizon":
        if base.h is None:  # striped: a line on a band edge (or anywhere), always No
            line = float(np.clip(rng.choice(base.edges) if rng.random() < 0.7 else rng.uniform(0.05, 0.95),
                                 0.03, 0.97))
            yes = False
        else:
            u = rng.random()
            if u < 0.5:
                d = rng.uniform(-0.055, 0.055)
            elif u < 0.7:
                d = rng.choice([-1, 1]) * rng.uniform(0.065, 0.15)  # hard negatives just outside the tolerance
            else:
                d = rng.choice([-1, 1]) * rng.uniform(0.065, 0.8)
            line = float(np.clip(base.h + d, 0.03, 0.97))
            yes = abs(line - base.h) < HORIZON_TOLERANCE
        tilt = 0.0 if rng.random() < 0.7 else float(rng.uniform(-MAX_TILT, MAX_TILT))
        pixels = composite(pixels, horizon.render(horizon.Spec(line, tilt), (SIZE, SIZE)))
        aux["line"] = line
        question = horizon.QUESTION
    elif kind == "palette":
        colors = _palette_pick(rng, base, presets)
        yes = palette_distance_from(base.dominant(), colors) < PALETTE_THRESHOLD
        pixels = composite(pixels, palette.render(palette.Spec(tuple(colors)), (SIZE, SIZE)))
        question = palette.QUESTION
    else:
        names = list(PROMPTS)
        asked = base.scheme if rng.random() < 0.5 else names[rng.integers(len(names))]
        yes = asked == base.scheme
        question = prompt_question(asked)
    return {"pixels": pixels, "question": question, "answer": "Yes" if yes else "No", "yes": yes, "kind": kind,
            **aux}


def palette_distance_from(dominant: list[RGB], colors: list[RGB]) -> float:
    """palette_distance with the image's dominant colours already extracted."""
    dom = srgb_to_lab(np.array(dominant, dtype=np.float64))
    pal = srgb_to_lab(np.array(colors, dtype=np.float64))
    return float(ciede2000_lab(dom[:, None], pal[None]).min(1).mean())


def _base_from_scene(scene: Scene) -> _Base:
    return _Base(np.asarray(render_scene(scene)), scene.h, scene.prompt)


def _base_from_generated(image: np.ndarray) -> _Base:
    return _Base(image, horizon_of(image)[0], scheme_of(image)[0])


def _striped_base(rng: np.random.Generator) -> _Base:
    img, edges = striped_image(rng)
    base = _Base(img, None, None)
    base.edges = edges
    return base


KINDS = ("horizon", "palette", "alignment")


def _batch(rng, rendered: list[_Base], generated: list[_Base], presets, n: int) -> list[dict]:
    items = []
    for _ in range(n):
        kind = KINDS[rng.choice(3, p=[0.5, 0.25, 0.25])]
        u = rng.random()
        if kind == "horizon" and u < 0.08:
            base = _striped_base(rng)
        elif u < 0.4 and generated:
            base = generated[rng.integers(len(generated))]
        else:
            base = rendered[rng.integers(len(rendered))]
        items.append(make_item(rng, kind, base, presets))
    return items


def judge_accuracy(vlm, items: list[dict], batch: int = 32) -> dict:
    """Per kind: the share of items where P(Yes) > 0.5 agrees with the label."""
    import torch

    vlm.model.eval()
    by_kind: dict[str, list[bool]] = {}
    with torch.no_grad():
        for i in range(0, len(items), batch):
            chunk = items[i:i + batch]
            nll = vlm.nll_rows([(it["pixels"], it["question"], "Yes") for it in chunk])
            for it, p in zip(chunk, torch.exp(-nll).tolist(), strict=True):
                by_kind.setdefault(it["kind"], []).append((p > 0.5) == it["yes"])
    return {k: round(float(np.mean(v)), 3) for k, v in by_kind.items()}


def balanced_items(rng, bases: list[_Base], kind: str, n: int, presets) -> list[dict]:
    """n held-out items of one kind, half Yes and half No where the kind allows it."""
    want_yes, items, tries = n // 2, [], 0
    yes_n = no_n = 0
    while len(items) < n and tries < 50 * n:
        tries += 1
        it = make_item(rng, kind, bases[rng.integers(len(bases))], presets)
        if it["yes"] and yes_n < want_yes:
            yes_n += 1
            items.append(it)
        elif not it["yes"] and no_n < n - want_yes:
            no_n += 1
            items.append(it)
    return items


def train_judge(vlm, rendered: list[_Base], generated: list[_Base], budget_s: float, seed: int) -> dict:
    """Answer cross-entropy through our own adapter (vlm.nll_rows: the exact token layout), plus auxiliary heads
    on the vision features (horizon height, line height, their difference; the scheme): without them the judge
    sat at chance on the horizon question. The heads are dropped afterwards."""
    import torch

    from overlays.colors import as_rgb
    from overlays.palette import load_presets

    presets = [[as_rgb(c) for c in v] for v in load_presets().values()]
    model = vlm.model
    model.requires_grad_(True)
    model.train()
    feats: dict[str, torch.Tensor] = {}
    hook = model.model.visual.register_forward_hook(lambda m, i, o: feats.__setitem__("v", o.last_hidden_state))
    with torch.no_grad():  # the feature width per image, whatever the vision output's layout
        vlm.nll_rows([(torch.zeros(1, 3, SIZE, SIZE), "Yes?", "Yes")])
    width = feats["v"].numel()
    reg_head, cls_head = torch.nn.Linear(width, 3), torch.nn.Linear(width, len(PROMPTS))
    params = list(model.parameters()) + list(reg_head.parameters()) + list(cls_head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    clock, step, rng = _Clock(budget_s), 0, np.random.default_rng(seed + 10)
    names = list(PROMPTS)
    hist: dict[str, list[float]] = {"answer": [], "aux": []}
    while not clock.done:
        items = _batch(rng, rendered, generated, presets, 16)
        nll = vlm.nll_rows([(it["pixels"], it["question"], it["answer"]) for it in items])
        v = feats["v"].reshape(len(items), width)
        reg = reg_head(v)
        target = torch.tensor([[it["h"] or 0.0, it["line"] or 0.0, (it["h"] or 0.0) - (it["line"] or 0.0)]
                               for it in items])
        mask = torch.tensor([[it["h"] is not None, it["line"] is not None, it["h"] is not None
                              and it["line"] is not None] for it in items], dtype=torch.float32)
        aux = (((reg - target) ** 2) * mask).sum() / mask.sum().clamp(min=1) * 20
        known = [i for i, it in enumerate(items) if it["scheme"] is not None]
        if known:
            labels = torch.tensor([names.index(items[i]["scheme"]) for i in known])
            aux = aux + 0.3 * torch.nn.functional.cross_entropy(cls_head(v[known]), labels)
        loss = nll.mean() + aux
        _set_lr(opt, 1e-3, clock.lr_factor(step, 100))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        hist["answer"].append(nll.mean().item())
        hist["aux"].append(aux.item())
        step += 1
        if step % 200 == 0:
            _log(f"  judge step {step}  answer nll {np.mean(hist['answer'][-200:]):.3f}  "
                 f"aux {np.mean(hist['aux'][-200:]):.4f}  {clock.elapsed:.0f}s")
    hook.remove()
    model.requires_grad_(False)
    model.eval()
    return {"steps": step, "seconds": round(clock.elapsed, 1),
            "final_answer_nll": round(float(np.mean(hist["answer"][-200:])), 4)}


# --------------------------------------------------------------------------- the command
def save_judge(vlm, folder: Path) -> None:
    """The layout loading.save_random writes: model, tokenizer, image processor, chat_template.jinja."""
    folder.mkdir(parents=True, exist_ok=True)
    vlm.model.save_pretrained(folder)
    vlm.tokenizer.save_pretrained(folder)
    vlm.image_processor.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(vlm.tokenizer.chat_template)


def train(out: Path, seed: int, budgets: dict[str, float], command: str) -> dict:
    """All stages; writes out/generator, out/vlm, out/training.json, out/README.md."""
    import copy

    import torch

    from . import random_models
    from .generator import FluxGenerator

    torch.set_num_threads(2)
    t_all = time.perf_counter()
    report: dict = {"seed": seed, "command": command, "size": SIZE, "prompts": list(PROMPTS), "stages": {}}
    stages = report["stages"]
    rng = np.random.default_rng(seed)

    t = time.perf_counter()
    scenes, images = render_pool(rng, 5000)
    held_scenes, held = render_pool(np.random.default_rng(seed + 1000), 128)
    stages["render"] = {"scenes": len(scenes), "seconds": round(time.perf_counter() - t, 1)}
    _log(f"rendered {len(scenes)} scenes in {stages['render']['seconds']}s")

    random_models.seeded(0)  # the text encoders keep the tiny preset's seed-0 random weights
    pipe = random_models.build_flux("tiny")
    torch.manual_seed(seed)
    _log("stage 1: VAE")
    stages["vae"] = train_vae(pipe.vae, images, held, held_scenes, budgets["vae"])
    _log(f"  {stages['vae']}")

    _log("stage 2: rectified-flow transformer")
    call = _FluxCall(pipe)
    flipped = images[:, :, ::-1].copy()  # mirror images: more data, tilts of both signs
    latents = encode_latents(pipe, np.concatenate([images, flipped]))
    pidx = torch.tensor([list(PROMPTS).index(s.prompt) for s in scenes] * 2)
    teacher = pipe.transformer
    stages["flow"] = train_flow(teacher, call, latents, pidx, budgets["flow"])
    gen = torch.Generator().manual_seed(seed + 7)
    eval_noise = torch.randn((32 * len(PROMPTS), 49, 64), generator=gen)
    eval_pidx = torch.arange(len(PROMPTS)).repeat_interleave(32)
    eval_prompts = [list(PROMPTS)[i] for i in eval_pidx]
    t4 = decode_images(pipe, euler_sample(teacher, call, eval_noise, eval_pidx, 4))
    stages["flow"]["teacher_4_steps"] = image_stats(t4, eval_prompts)
    _log(f"  {stages['flow']}")

    _log("stage 3: distillation to one step")
    student = copy.deepcopy(teacher)
    stages["distill"] = distill(student, teacher, call, budgets["distill"], teacher_steps=8, n_pairs=4096)
    pipe.transformer = student
    del teacher
    generator = FluxGenerator(pipe, dataclasses.replace(toy_preset(".", "."), generator_source="toy"), "cpu")
    seeds = list(range(32))
    one = [np.asarray(im) for p in PROMPTS for im in [generator.generate(p, s) for s in seeds]]
    stages["distill"]["stock_pipeline_1_step_32_seeds"] = image_stats(np.stack(one),
                                                                     [p for p in PROMPTS for _ in seeds])
    beach = [horizon_of(im)[0] for im in one[:32]]
    stages["distill"]["beach_horizon_mean_sd"] = [round(float(np.mean(beach)), 3), round(float(np.std(beach)), 3)]
    _log(f"  {stages['distill']}")
    pipe.save_pretrained(out / "generator")
    report["total_seconds"] = round(time.perf_counter() - t_all, 1)
    return train_judge_stage(out, report, generator, scenes[:1200], images[:1200], budgets["judge"])


def resume_judge(out: Path, seed: int, budget_s: float, command: str, previous: dict) -> dict:
    """Stage 4 alone, on the generator already saved in out/generator; the generator's figures are measured again
    from the saved folder (those of stages 1-3 come from `previous`)."""
    import torch
    from diffusers import FluxPipeline

    from .generator import FluxGenerator

    torch.set_num_threads(2)
    t_all = time.perf_counter()
    report = previous | {"seed": seed, "command": previous.get("command", "") + " ; then " + command}
    pipe = FluxPipeline.from_pretrained(out / "generator", dtype=torch.float32)
    held_scenes, held = render_pool(np.random.default_rng(seed + 1000), 128)
    with torch.no_grad():
        x = _to_tensor(held)
        rec = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mode()).sample
    rec_img = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    herr = [abs(horizon_of(r)[0] - sc.h) for r, sc in zip(rec_img, held_scenes, strict=True)]
    vae = report["stages"]["vae"]
    vae |= {"held_out_psnr_db": round(_psnr(rec, x), 2), "held_out_horizon_error_mean": round(float(np.mean(herr)), 4),
            "held_out_horizon_error_max": round(float(np.max(herr)), 4)}
    generator = FluxGenerator(pipe, dataclasses.replace(toy_preset(".", "."), generator_source="toy"), "cpu")
    seeds = list(range(32))
    one = [np.asarray(generator.generate(p, sd)) for p in PROMPTS for sd in seeds]
    dist = report["stages"]["distill"]
    dist["stock_pipeline_1_step_32_seeds"] = image_stats(np.stack(one), [p for p in PROMPTS for _ in seeds])
    beach = [horizon_of(im)[0] for im in one[:32]]
    dist["beach_horizon_mean_sd"] = [round(float(np.mean(beach)), 3), round(float(np.std(beach)), 3)]
    _log(f"  generator re-measured: {dist}")
    scenes, images = render_pool(np.random.default_rng(seed), 1200)
    report["total_seconds"] = round(report.get("total_seconds", 0) + time.perf_counter() - t_all, 1)
    return train_judge_stage(out, report, generator, scenes, images, budget_s)


def train_judge_stage(out: Path, report: dict, generator, scenes: list[Scene], images: np.ndarray,
                      budget_s: float) -> dict:
    """Stage 4: label generated images by the analytic measures, train the judge, measure it, save it."""
    from overlays.colors import as_rgb
    from overlays.palette import load_presets

    from .vlm import QwenVL

    t_all = time.perf_counter()
    seed, stages = report["seed"], report["stages"]
    _log("stage 4: judge")
    t = time.perf_counter()
    gen_rng = np.random.default_rng(seed + 20)
    train_prompts = [list(PROMPTS)[i] for i in gen_rng.integers(len(PROMPTS), size=600)]
    generated = [_base_from_generated(np.asarray(generator.generate(p, 10_000 + i)))
                 for i, p in enumerate(train_prompts)]
    held_prompts = [list(PROMPTS)[i] for i in gen_rng.integers(len(PROMPTS), size=120)]
    held_generated = [_base_from_generated(np.asarray(generator.generate(p, 900_000 + i)))
                      for i, p in enumerate(held_prompts)]
    rendered = [_Base(im, s.h, s.prompt) for s, im in zip(scenes, images, strict=True)]
    prep_s = time.perf_counter() - t
    _log(f"  {len(generated)} + {len(held_generated)} generated images labelled in {prep_s:.0f}s")
    model, tokenizer, image_processor = build_judge(seed)
    vlm = QwenVL(model, tokenizer, image_processor)
    stages["judge"] = train_judge(vlm, rendered, generated, budget_s, seed)
    stages["judge"]["data_seconds"] = round(prep_s, 1)
    presets = [[as_rgb(c) for c in v] for v in load_presets().values()]
    ev = np.random.default_rng(seed + 30)
    held_rendered = [_base_from_scene(sample_scene(ev)) for _ in range(300)]
    acc = {"held_out_scenes": {}, "held_out_generated": {}}
    for kind in KINDS:
        acc["held_out_scenes"] |= judge_accuracy(vlm, balanced_items(ev, held_rendered, kind, 300, presets))
        acc["held_out_generated"] |= judge_accuracy(vlm, balanced_items(ev, held_generated, kind, 120, presets))
    stripes = [make_item(ev, "horizon", _striped_base(ev), presets) for _ in range(100)]
    acc["striped_negatives_horizon"] = judge_accuracy(vlm, stripes)["horizon"]
    stages["judge"]["accuracy"] = acc
    _log(f"  {stages['judge']}")
    save_judge(vlm, out / "vlm")
    report["total_seconds"] = round(report.get("total_seconds", 0) + time.perf_counter() - t_all, 1)
    return report


def write_report(out: Path, report: dict) -> None:
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    s = report["stages"]
    lines = [
        "# Toy world: a trained tiny generator and judge",
        "",
        "A tiny Flux-shaped one-step generator of toy landscapes (`generator/`, a FluxPipeline folder) and a tiny",
        "Qwen2.5-VL-shaped judge (`vlm/`) trained to answer the horizon, palette and alignment questions, so that",
        "the dual-process loop can be seen to steer a horizon offline on a CPU. Scenes and their analytic measures:",
        "`pipelines/toy_world.py`. Float32, CPU. Not a real model: six prompts, 112 px.",
        "",
        f"Made by `{report['command']}` (seed {report['seed']}) in {report['total_seconds'] / 60:.1f} min on 2 CPU "
        "threads.",
        "",
        "Load with the preset `toy` (which points here), or for another folder",
        "`pipelines.toy_world.toy_preset(\"DIR/generator\", \"DIR/vlm\")`.",
        "",
        "## Figures (all in training.json)",
        f"- VAE: held-out PSNR {s['vae']['held_out_psnr_db']} dB, horizon error of reconstructions "
        f"{s['vae']['held_out_horizon_error_mean']} (max {s['vae']['held_out_horizon_error_max']}).",
        f"- Teacher, 4 Euler steps, 32 seeds x 6 prompts: {s['flow']['teacher_4_steps']}.",
        f"- Distilled one-step generator via the stock FluxPipeline: {s['distill']['stock_pipeline_1_step_32_seeds']}.",
        f"- Judge accuracy (P(Yes) > 0.5 vs the analytic label): {s['judge']['accuracy']}.",
    ]
    if "verification" in report:
        lines += ["", "## The method with these weights", f"{json.dumps(report['verification'])}"]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def verify(out: Path, steps: int = 60, lr: float = 5e-4, lines: tuple[float, ...] = (0.3, 0.7),
           seeds: tuple[int, ...] = (5000, 5001, 5002, 5003, 5004), prompt: str = "a beach at noon") -> dict:
    """Our own optimisation loop with the saved models: does the horizon move to the line on unseen seeds?"""
    import tempfile

    import torch

    from overlays import composite, horizon

    from . import lora
    from .loading import load_generator, load_vlm
    from .optimize import optimize, save_result
    from .vlm import from_pil

    torch.set_num_threads(2)
    preset = toy_preset(out / "generator", out / "vlm")
    generator, vlm = load_generator(preset, "cpu"), load_vlm(preset, "cpu")
    result: dict = {"prompt": prompt, "steps": steps, "lr": lr, "rank": 4, "seeds": list(seeds), "lines": {}}

    def measure(line: float) -> dict:
        overlay = horizon.render(horizon.Spec(line), (SIZE, SIZE))
        imgs = [generator.generate(prompt, s) for s in seeds]
        hs = [horizon_of(im)[0] for im in imgs]
        with torch.no_grad():
            p = [vlm.score(composite(from_pil(im), overlay), [(horizon.QUESTION, "Yes")]) for im in imgs]
        dist = np.abs(np.subtract(hs, line))
        return {"horizons": [round(h, 3) for h in hs], "distance_mean": round(float(dist.mean()), 4),
                "distance_median": round(float(np.median(dist)), 4),
                "p_yes_mean": round(float(np.mean(p)), 3),
                "scheme_is_prompt": sum(scheme_of(im)[0] == prompt for im in imgs),
                "scheme_distance_median": round(float(np.median([scheme_of(im)[1] for im in imgs])), 2)}

    for line in lines:
        before = measure(line)
        overlay = np.asarray(horizon.render(horizon.Spec(line), (SIZE, SIZE)))
        t = time.perf_counter()
        res = optimize(generator, vlm, prompt, [(horizon.QUESTION, "Yes")], overlay=overlay, steps=steps,
                       rank=4, lr=lr, seed=0, progress=False)
        seconds = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "lora.safetensors")
            save_result(res, path, generator, prompt, [(horizon.QUESTION, "Yes")], f"horizon at y={line}")
            with lora.applied(generator.pipe, path, 1.0):
                after = measure(line)
        result["lines"][str(line)] = {"before": before, "after": after, "seconds": round(seconds, 1),
                                      "train_p_yes_first_last": [round(res.history[0].p, 3),
                                                                 round(res.history[-1].p, 3)]}
        _log(f"line {line}: distance {before['distance_mean']} -> {after['distance_mean']} (median "
             f"{before['distance_median']} -> {after['distance_median']}), P(yes) {before['p_yes_mean']} -> "
             f"{after['p_yes_mean']}, {seconds:.1f}s")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.toy_world", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train the toy generator and judge (about 30 min on 2 CPU threads)")
    tr.add_argument("--out", required=True, type=Path)
    tr.add_argument("--seed", type=int, default=0)
    for name, default in (("vae", 240), ("flow", 450), ("distill", 220), ("judge", 780)):  # about 30 min in all
        tr.add_argument(f"--{name}-seconds", type=float, default=default, help=f"time budget of the {name} stage")
    tr.add_argument("--no-verify", action="store_true", help="skip the optimisation check at the end")
    tr.add_argument("--resume-judge", type=Path, metavar="JSON",
                    help="train only the judge, on the generator in --out; JSON holds the earlier stages' report")
    ve = sub.add_parser("verify", help="run the optimisation check on trained folders, update training.json")
    ve.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "train":
        args.out.mkdir(parents=True, exist_ok=True)
        command = "python -m pipelines.toy_world " + " ".join(argv if argv is not None else sys.argv[1:])
        budgets = {k: getattr(args, f"{k}_seconds") for k in ("vae", "flow", "distill", "judge")}
        if args.resume_judge:
            previous = json.loads(args.resume_judge.read_text())
            report = resume_judge(args.out, args.seed, budgets["judge"], command, previous)
        else:
            report = train(args.out, args.seed, budgets, command)
        write_report(args.out, report)
        if not args.no_verify:
            report["verification"] = verify(args.out)
            write_report(args.out, report)
    else:
        report = json.loads((args.out / "training.json").read_text())
        report["verification"] = verify(args.out)
        write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
