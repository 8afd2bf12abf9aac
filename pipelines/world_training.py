"""Training the toy world's generator on the CPU, in resumable stages with wall-clock budgets (a command module: the
runtime never imports it; the world itself is `pipelines/world.py`).

    python -m pipelines.world_training generator --out runs/world --minutes vae=12,decoder=6,onestep=18,objects=12
    python -m pipelines.world_training sheet --out runs/world      # contact-sheet.png of runs/world/generator

Stages, each saved under OUT/stages/<stage>/ with its figures, and skipped when it is already there:
1. vae: a Flux-shaped VAE (16 latent channels, 8x down) on clean renders; held-out PSNR is its gate. The grammar's
   word-level tokenizer is made with it.
2. decoder: the VAE's decoder alone on whole images (`sharpen_decoder`); the latents stay as they were.
3. onestep: the Flux transformer's one step from sigma = 1 and its text encoders (CLIP and T5), trained together by
   regression: the prompt fixes what it names, the noise's channel means choose the light and the horizon
   (`scene_of`). A generator distilled from a flow teacher paints the same kind of map; regressing onto it directly
   costs a CPU one stage instead of three (a flow teacher trained for 14 min and distilled for 7 painted blurred
   scenes that read as the prompt's scene half the time).
4. objects: the same regression from where onestep stopped, the squared error weighted OBJECT_WEIGHT + 1 times on
   the latent cells where a named thing (sun or moon, tree, clouds, birds) stands.
Then `generator/` is a FluxPipeline folder the app's loader reads, and `gates` measures it with the world's analytic
truth on evaluation seeds no stage trains on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from PIL import Image, ImageDraw
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

from . import world

TRAIN_SEED = 0  # scenes, prompts and noise of every stage come from generators seeded from here (< EVAL_SEEDS)
EVAL_SEEDS = 10**9  # the gates' scene seeds and pipeline noise seeds start here: no stage ever uses them
TOKENS = 32  # text length of the toy world's prompts (T5 and CLIP)
CROP = 56  # the VAE trains on crops of this side
SCENES_PER_RUN = 6000  # rendered once per run (about a minute)
SIZES = {
    "vae": dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(16, 32, 32, 64),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=1, norm_num_groups=8, use_quant_conv=False, use_post_quant_conv=False),
    "transformer": dict(patch_size=1, in_channels=64, num_layers=3, num_single_layers=3, attention_head_dim=24,
                        num_attention_heads=4, joint_attention_dim=64, pooled_projection_dim=64,
                        guidance_embeds=False, axes_dims_rope=(4, 10, 10)),
    "clip": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 projection_dim=64, max_position_embeddings=TOKENS),
    "t5": dict(d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4, relative_attention_num_buckets=8),
}


def log(message: str) -> None:
    print(message, flush=True)


class Clock:
    """A stage's wall-clock budget: loops run until it is spent; the learning rate warms up, then follows a cosine
    to 5 % over the budget."""

    def __init__(self, seconds: float):
        self.start, self.seconds = time.perf_counter(), seconds

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def done(self) -> bool:
        return self.elapsed >= self.seconds

    def lr(self, base: float, step: int, warmup: int = 100) -> float:
        frac = min(1.0, self.elapsed / self.seconds)
        return base * min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def step_with(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()


# ---------- data ---------------------------------------------------------------------------------------------------


def prompts_and_images(rng: np.random.Generator, n: int) -> tuple[list[str], np.ndarray, list[world.Scene]]:
    """n prompts of the grammar (a third scenes alone, the rest naming each attribute at 50 or 90 %) with a render of
    a scene each describes, as uint8 (n, H, W, 3)."""
    prompts, scenes = [], []
    for i in range(n):
        rich = (0.0, 0.5, 0.9)[i % 3]
        prompt, scene = world.sample_prompt(rng, rich)
        prompts.append(prompt)
        scenes.append(scene)
    return prompts, np.stack([np.asarray(world.render(s)) for s in scenes]), scenes


def as_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1], the VAE's range."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def as_images(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((((a.clamp(-1, 1) - b) / 2) ** 2).mean())
    return 10 * math.log10(1 / max(mse, 1e-12))


# ---------- stages -------------------------------------------------------------------------------------------------


def grammar_tokenizer(max_length: int = TOKENS):
    """A BPE tokenizer whose vocabulary holds every word of the grammar (trained on sampled prompts)."""
    rng = np.random.default_rng(TRAIN_SEED)
    corpus = [world.sample_prompt(rng, rich)[0] for rich in (0.3, 0.9) for _ in range(3000)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<pad>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    # Every prompt ends in </s>: CLIP's pooled output is read there, after the whole prompt.
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   model_max_length=max_length)


def build_pipeline():
    """A FluxPipeline of the toy world's sizes with the grammar's tokenizer, untrained."""
    torch.manual_seed(TRAIN_SEED)
    tokenizer = grammar_tokenizer()
    vocab = len(tokenizer)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, pad_token_id=0, bos_token_id=1, eos_token_id=1,
                                        **SIZES["clip"]))
    t5 = T5EncoderModel(T5Config(vocab_size=vocab, pad_token_id=0, eos_token_id=1, **SIZES["t5"]))
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0), vae=AutoencoderKL(**SIZES["vae"]),
                        text_encoder=clip, tokenizer=tokenizer, text_encoder_2=t5, tokenizer_2=tokenizer,
                        transformer=FluxTransformer2DModel(**SIZES["transformer"]))


def train_vae(vae, images: np.ndarray, held: np.ndarray, seconds: float) -> dict:
    """Reconstruction of the posterior's mode (MSE, L1, and L1 of the image's gradients, which keeps edges sharp);
    then the shift and scale that give the transformer latents of mean 0 and sd 1 (Flux's VAE config carries its
    own)."""
    vae.train().requires_grad_(True)
    params = list(vae.parameters())
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    clock, step, rng = Clock(seconds), 0, np.random.default_rng(TRAIN_SEED + 1)
    while not clock.done:
        # Random 56 px crops (the VAE is convolutional): four times the steps of whole images in the same time.
        top, left = rng.integers(0, world.SIZE - CROP + 1, size=2) // 8 * 8
        x = as_tensor(images[rng.integers(len(images), size=32), top:top + CROP, left:left + CROP])
        if rng.random() < 0.5:
            x = x.flip(-1)
        posterior = vae.encode(x).latent_dist
        # The mode, not a sample: sampling noise blurred edges (clouds, birds, the trunk) at 28 dB; the transformer
        # is trained on the modes anyway. A small penalty on the means keeps the latents' scale in hand.
        reconstruction = vae.decode(posterior.mode()).sample
        loss = (torch.nn.functional.mse_loss(reconstruction, x) + 0.1 * (reconstruction - x).abs().mean()
                + 0.5 * edge_loss(reconstruction, x) + 1e-5 * (posterior.mean ** 2).mean())
        step_with(optimizer, loss, params, clock.lr(3e-3, step))
        step += 1
        if step % 250 == 0:
            log(f"  vae step {step}  loss {loss.item():.5f}  {clock.elapsed:.0f}s")
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        some = images[:1024]
        z = torch.cat([vae.encode(as_tensor(some[i:i + 64])).latent_dist.mode() for i in range(0, len(some), 64)])
    shift, sd = float(z.mean()), float(z.std())
    vae.register_to_config(shift_factor=shift, scaling_factor=1.0 / sd)
    return {"steps": step, "seconds": round(clock.elapsed, 1), "held_out_psnr_db": round(held_out_psnr(vae, held), 2),
            "shift_factor": shift, "scaling_factor": 1.0 / sd}


def sharpen_decoder(vae, images: np.ndarray, held: np.ndarray, seconds: float) -> dict:
    """The decoder alone, on whole images, from the encoder's (frozen) modes: the `vae` stage's crops give its group
    norms other statistics than a whole picture has, which shifted colours and blurred edges at 28.5 dB; the
    latents, and so the transformer trained on them, do not change."""
    with torch.no_grad():
        z = torch.cat([vae.encode(as_tensor(images[i:i + 64])).latent_dist.mode() for i in range(0, len(images), 64)])
    decoder = [m for m in (vae.decoder, vae.post_quant_conv) if m is not None]
    params = [p for m in decoder for p in m.parameters()]
    for m in decoder:
        m.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=3e-4, weight_decay=0.0)
    clock, step, rng = Clock(seconds), 0, np.random.default_rng(TRAIN_SEED + 4)
    while not clock.done:
        idx = rng.integers(len(z), size=8)
        x, reconstruction = as_tensor(images[idx]), vae.decode(z[idx]).sample
        loss = (torch.nn.functional.mse_loss(reconstruction, x) + 0.1 * (reconstruction - x).abs().mean()
                + 0.5 * edge_loss(reconstruction, x))
        step_with(optimizer, loss, params, clock.lr(3e-4, step, 20))
        step += 1
        if step % 100 == 0:
            log(f"  decoder step {step}  loss {loss.item():.5f}  {clock.elapsed:.0f}s")
    vae.eval().requires_grad_(False)
    return {"steps": step, "seconds": round(clock.elapsed, 1), "held_out_psnr_db": round(held_out_psnr(vae, held), 2)}


def edge_loss(reconstruction: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 of the difference of the images' vertical and horizontal gradients: keeps edges sharp."""
    return sum((d(reconstruction) - d(x)).abs().mean() for d in (lambda t: t[..., 1:, :] - t[..., :-1, :],
                                                                 lambda t: t[..., :, 1:] - t[..., :, :-1]))


@torch.no_grad()
def held_out_psnr(vae, held: np.ndarray) -> float:
    x = as_tensor(held)
    out = torch.cat([vae.decode(vae.encode(x[i:i + 32]).latent_dist.mode()).sample for i in range(0, len(x), 32)])
    return psnr(out, x)


def packed_latents(pipe, images: np.ndarray) -> torch.Tensor:
    """Packed, scaled latents (N, 49, 64): what the transformer takes and the pipeline's decode undoes."""
    vae, out = pipe.vae, []
    with torch.no_grad():
        for i in range(0, len(images), 64):
            z = vae.encode(as_tensor(images[i:i + 64])).latent_dist.mode()
            z = (z - vae.config.shift_factor) * vae.config.scaling_factor
            out.append(pipe._pack_latents(z, *z.shape))
    return torch.cat(out)


class Call:
    """The transformer called as FluxGenerator.velocity calls it, prompts encoded by the (trainable) text encoders."""

    def __init__(self, pipe):
        self.pipe = pipe
        side = world.SIZE // pipe.vae_scale_factor // 2
        ids = torch.zeros(side, side, 3)
        ids[..., 1] = torch.arange(side)[:, None]
        ids[..., 2] = torch.arange(side)[None, :]
        self.img_ids = ids.reshape(side * side, 3)
        self.txt_ids = torch.zeros(TOKENS, 3)

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.pipe.tokenizer(prompts, padding="max_length", max_length=TOKENS, truncation=True,
                                  return_tensors="pt")
        pooled = self.pipe.text_encoder(tok.input_ids, output_hidden_states=False).pooler_output
        embeds = self.pipe.text_encoder_2(tok.input_ids)[0]
        return embeds, pooled

    def __call__(self, transformer, x, sigma, text: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        embeds, pooled = text
        return transformer(hidden_states=x, timestep=sigma, pooled_projections=pooled, encoder_hidden_states=embeds,
                           txt_ids=self.txt_ids, img_ids=self.img_ids, guidance=None, return_dict=False)[0]


# ---------- the noise decides what the prompt leaves free ---------------------------------------------------------

LATENT = (16, world.SIZE // 8, world.SIZE // 8)  # the pipeline's noise for one image, before packing


def draws_of(noise: torch.Tensor) -> np.ndarray:
    """(N, 16) numbers in (0, 1), one per latent channel: the normal CDF of the channel's mean over the image
    (a standard normal once scaled by the square root of its size), so each is uniform over seeds."""
    means = noise.double().mean(dim=(2, 3)) * math.sqrt(noise.shape[2] * noise.shape[3])
    return (0.5 * (1 + torch.erf(means / math.sqrt(2)))).numpy()


SHAPES = (0.5, 0.18, 0.55, 0.3, 0.4)  # the generator's clouds and birds: always these (`world.layout`)
# The heights and tilts the noise chooses from: a few, not a continuum. A first run drew them continuously and its
# pictures were blurred: the transformer read a channel's mean only to within a few percent, and painted the
# average of the horizons (and of the trees and suns that stand on them) it could not tell apart. From a few
# values it picks one, and paints it sharply.
HORIZONS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
TILTS = (-3.0, 0.0, 0.0, 0.0, 3.0)


def scene_of(named: dict[str, str], u: np.ndarray) -> world.Scene:
    """The scene a one-step generator paints for a prompt naming `named` from noise whose channel draws are `u`.
    The prompt fixes what it names and leaves out the things it does not name (sun or moon, tree, clouds, birds,
    a colour mood); the noise chooses the light and the horizon: channel 0 its height (`HORIZONS`), 1 its tilt
    (`TILTS`), 10 the time of day, each a step function of one channel's mean, which a small transformer can read;
    the things in the picture stand at places fixed by the prompt and the horizon (a first run that let the noise
    place them too, after `world.sample`, painted none of them in 20 min: it averaged them away)."""
    scene = named["scene"]
    times = {"sun": ["noon", "golden hour", "sunset"], "moon": ["night"]}.get(named.get("body", ""), list(world.TIMES))
    time = named.get("time") or times[min(len(times) - 1, int(len(times) * u[10]))]  # the sun is never out at night
    placement = named.get("placement")
    if placement:
        horizon = world.LOW if placement == "low" else world.HIGH
    else:
        horizon = HORIZONS[min(len(HORIZONS) - 1, int(len(HORIZONS) * u[0]))]
    tilt = TILTS[min(len(TILTS) - 1, int(len(TILTS) * u[1]))]
    body, tree = named.get("body"), named.get("tree")
    r = world.body_radius(body)
    return world.Scene(scene, time, float(horizon), float(tilt), clouds=named.get("sky") == "clouds", body=body,
                       body_x=0.3 if tree == "right" else 0.7, body_y=max(r + 0.03, float(horizon) - r - 0.12),
                       tree=tree, tree_x=0.2 if tree == "left" else 0.8, mood=named.get("mood", "neutral"),
                       birds=named.get("birds") == "yes", shapes=SHAPES)


def named_prompts(rng: np.random.Generator, n: int) -> list[dict[str, str]]:
    """What n training prompts name: always the scene; each other attribute of a sampled scene with probability 0,
    0.5 or 0.9 (a third each), so short and rich prompts are both common."""
    out = []
    for i in range(n):
        attributes = world.sample(rng).attributes()
        rich = (0.0, 0.5, 0.9)[i % 3]
        out.append({"scene": attributes["scene"]} | {k: v for k, v in attributes.items()
                                                     if k != "scene" and rng.random() < rich})
    return out


def _render(scene: world.Scene) -> np.ndarray:
    return np.asarray(world.render(scene))


OBJECT_WEIGHT = 10.0  # the "objects" stage's loss weight on the cells where a named thing stands


def without_things(scene: world.Scene) -> world.Scene:
    """The same scene with no sun or moon, tree, clouds or birds."""
    return dataclasses.replace(scene, body=None, tree=None, clouds=False, birds=False)


def pairs(pipe, n: int, seed: int) -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor]:
    """n (noise, prompt, target latent, cell weights) quadruples: packed noise, the prompt's words, the packed
    latent of the scene `scene_of` makes from them, and per packed cell 1 + OBJECT_WEIGHT where the scene's
    things (sun or moon, tree, clouds, birds) change the latent, else 1."""

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((n, *LATENT), generator=gen)
    named = named_prompts(rng, n)
    scenes = [scene_of(d, u) for d, u in zip(named, draws_of(noise), strict=True)]
    with_things = [i for i, s in enumerate(scenes) if without_things(s) != s]
    with Pool(2) as pool:
        images = np.stack(pool.map(_render, scenes, chunksize=64))
        plain = np.stack(pool.map(_render, [without_things(scenes[i]) for i in with_things], chunksize=64))
    targets = packed_latents(pipe, images)
    weights = torch.ones(targets.shape[:2])
    change = (packed_latents(pipe, plain) - targets[with_things]).pow(2).mean(dim=2)
    weights[with_things] += OBJECT_WEIGHT * (change > 0.01).float()
    return pipe._pack_latents(noise, n, *LATENT), [world.prompt_of(d) for d in named], targets, weights


def train_onestep(pipe, call: Call, noise: torch.Tensor, prompts: list[str], targets: torch.Tensor,
                  seconds: float, weights: torch.Tensor | None = None, lr: float = 1e-3) -> dict:
    """The generator's one step, x0 = noise - v(noise, sigma = 1) (what FluxPipeline(num_inference_steps=1) and the
    method's training path compute), regressed onto the scene its prompt and noise make; the text encoders train
    with it. `weights` (N, cells) weigh the squared error per packed cell (None: all 1)."""
    modules = [pipe.transformer, pipe.text_encoder, pipe.text_encoder_2]
    params = [p for m in modules for p in m.parameters()]
    for m in modules:
        m.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    clock, step, losses, ones = Clock(seconds), 0, [], torch.ones(64)
    gen = torch.Generator().manual_seed(TRAIN_SEED + 2)
    while not clock.done:
        idx = torch.randint(len(noise), (64,), generator=gen)
        x0 = noise[idx] - call(pipe.transformer, noise[idx], ones, call.encode([prompts[i] for i in idx.tolist()]))
        error = (x0 - targets[idx]).pow(2).mean(dim=2)
        loss = error.mean() if weights is None else (error * weights[idx]).sum() / weights[idx].sum()
        step_with(optimizer, loss, params, clock.lr(lr, step, 200))
        losses.append(loss.item())
        step += 1
        if step % 100 == 0:
            log(f"  one-step {step}  loss {np.mean(losses[-100:]):.4f}  {clock.elapsed:.0f}s")
    for m in modules:
        m.eval().requires_grad_(False)
    return {"steps": step, "seconds": round(clock.elapsed, 1), "pairs": len(noise),
            "final_loss": round(float(np.mean(losses[-100:])), 4)}


# ---------- gates --------------------------------------------------------------------------------------------------


def generated(pipe, prompts: list[str], seeds: list[int]) -> list[np.ndarray]:
    """One-step images through the stock FluxPipeline, as the app generates them."""
    out = []
    for prompt, seed in zip(prompts, seeds, strict=True):
        image = pipe(prompt, num_inference_steps=1, guidance_scale=0.0, height=world.SIZE, width=world.SIZE,
                     max_sequence_length=TOKENS, generator=torch.Generator().manual_seed(seed)).images[0]
        out.append(np.asarray(image))
    return out


def gates(pipe, per_attribute: int = 64) -> dict:
    """The generator's gates on evaluation seeds (EVAL_SEEDS and up): each attribute value named alone with a
    scene, read back; horizon words placed; horizons free within each scene; the VAE's PSNR is in its stage."""
    rng = np.random.default_rng(EVAL_SEEDS)
    seed = iter(range(EVAL_SEEDS, EVAL_SEEDS + 10**6))
    accuracy, placement = {}, {}
    values = [("scene", s) for s in world.SCENES] + [("time", t) for t in world.TIMES] + [
        (key, value) for key, words in world.WORDS.items() for value in words]
    for key, value in values:
        prompts = []
        for _ in range(per_attribute):
            named = {"scene": str(rng.choice(list(world.SCENES)))} | {key: value}
            prompts.append(world.prompt_of(named))
        images = generated(pipe, prompts, [next(seed) for _ in prompts])
        readings = [world.read(im) for im in images]
        accuracy[f"{key}={value}"] = round(float(np.mean([world.present(r, key, value) for r in readings])), 3)
        if key == "placement":
            target = world.LOW if value == "low" else world.HIGH
            placement[value] = round(float(np.mean([abs(r.horizon - target) for r in readings])), 3)
    spread = {}
    for scene in world.SCENES:
        images = generated(pipe, [scene] * per_attribute, [next(seed) for _ in range(per_attribute)])
        readings = [world.read(im) for im in images]
        hs = [r.horizon for r in readings]
        spread[scene] = {"sd": round(float(np.std(hs)), 3), "range": [round(min(hs), 2), round(max(hs), 2)],
                         "scene_read": round(float(np.mean([r.scene == scene for r in readings])), 3)}
    return {"attribute_accuracy": accuracy, "placement_mean_error": placement, "horizon_spread": spread}


SHEET_PROMPTS = ("a beach", "a beach at golden hour, low horizon, a lone tree on the right, vivid colours",
                 "a desert at sunset, the sun", "a green field, cloudy sky, birds in the sky",
                 "a snowy plain at noon, high horizon", "a lake at night, the moon", "a lavender field, muted colours",
                 "the sea at golden hour, the sun, a lone tree on the left", "a wheat field at noon, clear sky")


def contact_sheet(pipe, prompts: tuple[str, ...] = SHEET_PROMPTS, seeds: int = 5, cell: int = 224):
    """One row per prompt, `seeds` unseen seeds each, enlarged without smoothing; under each picture what
    `world.read` finds in it (scene, time, horizon and things), so a person can check the gates by eye."""

    label_w, text_h = 260, 26
    sheet = Image.new("RGB", (label_w + seeds * cell, len(prompts) * (cell + text_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, prompt in enumerate(prompts):
        y = r * (cell + text_h)
        draw.text((4, y + cell // 2), prompt[:40] + "\n" + prompt[40:], fill="black")
        images = generated(pipe, [prompt] * seeds, [EVAL_SEEDS + 7 * c + r for c in range(seeds)])
        for c, image in enumerate(images):
            x = label_w + c * cell
            sheet.paste(Image.fromarray(image).resize((cell, cell), Image.NEAREST), (x, y))
            read = world.read(image)
            things = [v for v in (read.body, read.tree and f"tree {read.tree}", read.clouds and "clouds",
                                  read.birds and "birds", read.mood != "neutral" and read.mood) if v]
            draw.text((x + 2, y + cell + 1), f"{read.scene} at {read.time}, h {read.horizon:.2f}\n{', '.join(things)}",
                      fill="black")
    return sheet


# ---------- the command --------------------------------------------------------------------------------------------


# "objects" goes on from "onestep" with the loss weighted onto the named things: a first run's plain mean squared
# error painted light, scene and horizon after 18 min but no sun, moon, tree or birds (a few cells of 49 each).
STAGES = ("vae", "decoder", "onestep", "objects")
PAIRS = 24000  # (noise, prompt, scene) triples the one-step stage trains on


def train_generator(out: Path, minutes: dict[str, float], until: str = STAGES[-1]) -> dict:
    """Every generator stage up to `until`, resuming from OUT/stages; then OUT/generator and its gates in
    OUT/generator-training.json."""

    torch.set_num_threads(2)
    stages = out / "stages"
    stages.mkdir(parents=True, exist_ok=True)
    report_path = out / "generator-training.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {"stages": {}}
    data = None  # the one-step stages' training pairs, made once per run
    for stage in STAGES[:STAGES.index(until) + 1]:
        folder = stages / stage
        if (folder / "model_index.json").exists():
            log(f"stage {stage}: done before, loading {folder}")
            pipe = FluxPipeline.from_pretrained(folder)
            continue
        log(f"stage {stage}: {minutes[stage]:g} min")
        t = time.perf_counter()
        if stage in ("vae", "decoder"):
            _, images, _ = prompts_and_images(np.random.default_rng(TRAIN_SEED), SCENES_PER_RUN)
            _, held, _ = prompts_and_images(np.random.default_rng(TRAIN_SEED + 100), 128)
            log(f"  rendered {len(images)} scenes in {time.perf_counter() - t:.0f}s")
        if stage == "vae":
            pipe = build_pipeline()
            report["stages"]["vae"] = train_vae(pipe.vae, images, held, 60 * minutes["vae"])
        elif stage == "decoder":
            report["stages"]["decoder"] = sharpen_decoder(pipe.vae, images, held, 60 * minutes["decoder"])
        else:
            if data is None:
                data = pairs(pipe, PAIRS, TRAIN_SEED + 200)
                log(f"  {PAIRS} noise/prompt/scene triples rendered and encoded in {time.perf_counter() - t:.0f}s")
            noise, prompts, targets, weights = data
            report["stages"][stage] = train_onestep(
                pipe, Call(pipe), noise, prompts, targets, 60 * minutes[stage],
                **({"weights": weights, "lr": 5e-4} if stage == "objects" else {}))
            report["stages"][stage]["data_seconds"] = round(time.perf_counter() - t
                                                            - report["stages"][stage]["seconds"], 1)
        log(f"  {report['stages'][stage]}")
        pipe.save_pretrained(folder)
        report_path.write_text(json.dumps(report, indent=1) + "\n")
    if until == STAGES[-1]:
        pipe.save_pretrained(out / "generator")
        report["gates"] = gates(pipe)
        log(json.dumps(report["gates"], indent=1))
        report_path.write_text(json.dumps(report, indent=1) + "\n")
    return report


def parse_minutes(text: str) -> dict[str, float]:
    minutes = {"vae": 12.0, "decoder": 6.0, "onestep": 18.0, "objects": 12.0}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key not in minutes:
            raise ValueError(f"--minutes: unknown stage {key!r}; stages: {', '.join(minutes)}")
        minutes[key] = float(value)
    return minutes


if __name__ == "__main__":  # the command lives in pipelines/commands/world_training.py
    from .commands.world_training import main

    sys.exit(main())
