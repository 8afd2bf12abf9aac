"""Text-to-image generators behind one small interface.

Two paths through the same weights:
- `generate(...)`: the stock diffusers pipeline, no gradient: what a user sees.
- the gradient pass used by the optimization, written out here because the pipelines run under
  `torch.no_grad`: `noisy_latents` (no gradient) gives x_t (for one-step models the initial noise at
  sigma = 1, so the training sample IS the user's image), `velocity` is ONE
  transformer step with gradient, `decode` turns the clean estimate x0_hat = x_t - sigma * v
  into pixels in [0, 1] with gradient.

Both families are rectified flows: x_t = (1 - s) x0 + s noise, v = noise - x0.
"""

from __future__ import annotations

import random
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import FluxPipeline, SanaPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from PIL import Image

from . import lora, random_models
from .checks import check_generate_size, check_prompt
from .presets import Preset


@dataclass
class Conditioning:
    """Encoded prompt tensors; the text encoders are not needed again once these exist."""

    tensors: dict[str, torch.Tensor]

    def to(self, device: torch.device) -> Conditioning:
        return Conditioning({k: v.to(device) for k, v in self.tensors.items()})


class Generator(ABC):
    """A text-to-image pipeline with the two paths the method needs (see the module docstring).

    Args:
        pipe: the stock diffusers pipeline (FluxPipeline, SanaPipeline), loaded by `loading.load_generator`.
        preset: what to run (resolution, sampler steps, guidance, LoRA targets, ...).
        device: where the pipeline runs; its transformer and VAE are frozen (only a LoRA trains).
    """

    def __init__(self, pipe, preset: Preset, device: str | torch.device = "cpu"):
        self.pipe = pipe
        self.preset = preset
        self.device = torch.device(device)
        pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        self.transformer = pipe.transformer
        self.vae = pipe.vae
        self.vae.requires_grad_(False)
        self.transformer.requires_grad_(False)
        quantize_base_weights(self.transformer, preset.base_weights)
        # Between prompts the text encoders wait on the CPU (T5-XXL alone is 9.5 GB); `encode` brings them over.
        self.text_encoder_home = torch.device("cpu") if preset.offload_text_encoders else self.device
        self.text_encoders_to(self.text_encoder_home)
        self.encoded: OrderedDict[str, Conditioning] = OrderedDict()  # the last prompts' conditioning
        self.compiled_module, self.compiled_for = None, None  # see `compiled`

    @property
    def lora_targets(self) -> tuple[str, ...]:
        """The modules a LoRA adapts: the preset's own list, else its family's."""
        return self.preset.lora_targets or family(self.preset.generator).lora_targets

    def encode(self, prompt: str | list[str]) -> Conditioning:
        """Prompt(s) -> conditioning tensors with one row per prompt, no gradient. A prompt seen among the last
        `ENCODED_PROMPTS` is not encoded again (the text encoders stay where they wait)."""
        if isinstance(prompt, str) and prompt in self.encoded:
            self.encoded.move_to_end(prompt)
            return self.encoded[prompt]
        try:
            self.text_encoders_to(self.device)
            cond = self.encode_prompt(prompt)
        finally:
            self.text_encoders_to(self.text_encoder_home)
        if isinstance(prompt, str):
            self.encoded[prompt] = cond
            while len(self.encoded) > ENCODED_PROMPTS:
                self.encoded.popitem(last=False)
        return cond

    # --- family-specific -------------------------------------------------------------------
    @abstractmethod
    def encode_prompt(self, prompt: str | list[str]) -> Conditioning:
        """Prompt(s) -> conditioning tensors, with the text encoders on `self.device`."""

    @abstractmethod
    def initial_noise(self, seed: int, size: int) -> torch.Tensor:
        """Gaussian latents in the layout the transformer takes."""

    @abstractmethod
    def velocity(self, latents: torch.Tensor, sigma: float, cond: Conditioning) -> torch.Tensor:
        """One transformer evaluation: the flow velocity at noise level sigma in [0, 1]."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> pixels (B, 3, H, W) in [0, 1], differentiable."""

    @abstractmethod
    def pipeline_kwargs(self, size: int) -> dict:
        """Arguments the stock pipeline call needs for this preset."""

    # --- shared --------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self.preset.resolution

    def sigmas(self, steps: int, size: int) -> list[float]:
        """The sampler's noise levels, 1 -> 0, as the stock pipeline schedules them."""
        self.pipe.scheduler.set_timesteps(steps, **self.schedule_kwargs(steps, size))
        return [float(s) for s in self.pipe.scheduler.sigmas]

    def schedule_kwargs(self, steps: int, size: int) -> dict:
        return {}

    @torch.no_grad()
    def noisy_latents(self, cond: Conditioning, seed: int, size: int | None = None) -> tuple[torch.Tensor, float]:
        """x_t and its sigma for one training step, drawn from `seed`, without gradient.

        One-step models (the default): x_t is the initial noise of `seed` and sigma = 1, so the gradient step's
        clean estimate is exactly the image `generate(prompt, seed)` gives. With `preset.renoise = (lo, hi)` they
        generate x0 first and re-noise it to a sigma drawn from (lo, hi) (one more transformer pass).
        Multi-step models run an Euler sampler on the pipeline's own noise levels, with whatever LoRA is active,
        down to a step drawn uniformly (Flux samples with Euler itself; Sana's DPM-Solver reaches nearly the same
        x_t); the gradient step starts there.
        """
        size = size or self.size
        rng = random.Random(seed)
        x = self.initial_noise(seed, size)
        sigmas = self.sigmas(self.preset.inference_steps, size)
        if self.preset.inference_steps == 1:
            if self.preset.renoise is None:
                return x, sigmas[0]
            x0 = x - sigmas[0] * self.velocity(x, sigmas[0], cond)
            sigma = rng.uniform(*self.preset.renoise)
            noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1)).to(x)
            return (1 - sigma) * x0 + sigma * noise, sigma
        stop = rng.randrange(len(sigmas) - 1)
        for i in range(stop):
            x = x + (sigmas[i + 1] - sigmas[i]) * self.velocity(x, sigmas[i], cond)
        return x, sigmas[stop]

    @torch.no_grad()
    def generate(self, prompt: str | Conditioning, seed: int, size: int | None = None,
                 lora_path: str | Path | None = None, scale: float = 1.0,
                 loras: Sequence[tuple[str | Path, float]] = ()) -> Image.Image:
        """One image from the stock pipeline: what a user gets.

        Args:
            prompt: the text, or its `Conditioning` when already encoded.
            seed: the initial noise's seed (the same seed gives the same image).
            size: the image side in pixels (None: the preset's resolution).
            lora_path: a LoRA file applied for this call only, at `scale`; without one, whatever adapters are
                active (during a run, the LoRA being trained) shape the image.
            loras: several (file, scale) pairs applied together for this call (stacked LoRAs), after `lora_path`.
        """
        cond = self.encode(prompt) if isinstance(prompt, str) else prompt
        stack = ([(lora_path, scale)] if lora_path is not None else []) + list(loras)
        with lora.stacked(self.pipe, stack, preset=self.preset.name):
            return self._generate(cond, [seed], size)[0]

    @torch.no_grad()
    def generate_batch(self, prompts: list[str], seed: int, size: int | None = None,
                       batch_size: int = 4) -> list[Image.Image]:
        """One image per prompt, all from the same starting noise, `batch_size` per pipeline call."""
        images: list[Image.Image] = []
        for i in range(0, len(prompts), batch_size):
            images += self._generate(self.encode(prompts[i:i + batch_size]), [seed], size)
        return images

    @torch.no_grad()
    def generate_seeds(self, prompt: str | Conditioning, seeds: Sequence[int], size: int | None = None,
                       batch_size: int = 4) -> list[Image.Image]:
        """One image of one prompt per seed, `batch_size` seeds per pipeline call: each the image
        `generate(prompt, seed)` gives, up to the batch's float rounding."""
        cond = self.encode(prompt) if isinstance(prompt, str) else prompt
        images: list[Image.Image] = []
        for i in range(0, len(seeds), batch_size):
            chunk = list(seeds[i:i + batch_size])
            rows = Conditioning({k: v.expand(len(chunk), *v.shape[1:]) for k, v in cond.tensors.items()})
            images += self._generate(rows, chunk, size)
        return images

    def _generate(self, cond: Conditioning, seeds: list[int], size: int | None) -> list[Image.Image]:
        """The stock pipeline on `cond`'s rows: one seed's noise for every row, or one seed per row."""
        size = self.size if size is None else check_generate_size(size)
        rows = cond.tensors["prompt_embeds"].shape[0]
        noise = torch.cat([self.initial_noise(s, size) for s in seeds])
        latents = noise.expand(rows, *noise.shape[1:]).contiguous() if len(seeds) == 1 else noise
        out = self.pipe(**cond.tensors, latents=latents, height=size, width=size,
                        num_inference_steps=self.preset.inference_steps, output_type="pil",
                        **self.pipeline_kwargs(size))
        return out.images

    @property
    def prompt_tokenizer(self):
        """The tokenizer whose length limit cuts prompts (T5 for Flux, Gemma for Sana)."""
        return getattr(self.pipe, "tokenizer_2", None) or self.pipe.tokenizer

    def checkpointing(self, on: bool) -> None:
        """Gradient checkpointing of the transformer and the VAE decoder (where the model supports it)."""
        for model in (self.transformer, self.vae):
            if getattr(model, "_supports_gradient_checkpointing", False):
                model.enable_gradient_checkpointing() if on else model.disable_gradient_checkpointing()

    @contextmanager
    def without_lora(self) -> Iterator[None]:
        """Inside: the base model, bit for bit (the adapters of the run are switched off, not removed)."""
        adapters = bool(getattr(self.transformer, "peft_config", None))
        if adapters:
            self.transformer.disable_adapters()
        try:
            yield
        finally:
            if adapters:
                self.transformer.enable_adapters()

    @contextmanager
    def compiled(self, on: bool = True) -> Iterator[None]:
        """Inside: `self.transformer` is the torch.compile'd module (the same weights and adapters); the stock
        pipeline keeps the plain one, and so does everything after. The compiled module is kept for the next
        call with the same adapters, so a run compiles once."""
        if not on:
            yield
            return
        plain = self.transformer
        if self.compiled_for is not plain:
            self.compiled_module, self.compiled_for = torch.compile(plain), plain
        self.transformer = self.compiled_module
        try:
            yield
        finally:
            self.transformer = plain

    def text_encoders_to(self, device: str | torch.device) -> None:
        """Move the text encoders (a no-op where they already are)."""
        for name in ("text_encoder", "text_encoder_2"):
            module = getattr(self.pipe, name, None)
            if module is not None and next(module.parameters()).device != torch.device(device):
                module.to(device)


ENCODED_PROMPTS = 8  # conditionings a generator keeps, so the app's repeated prompts skip the text encoders
BASE_WEIGHTS = ("bf16", "int8", "fp8")


def quantize_base_weights(module: torch.nn.Module, kind: str, skip: tuple[str, ...] = ()) -> None:
    """Frozen nn.Linear weights of `module` in 8 bits, weight-only (torchao): half the bytes of bf16. peft wraps
    such layers in its torchao LoRA layer, so the LoRA (fp32) trains, saves and loads as usual. "bf16" keeps the
    weights as loaded; nn.Linear modules whose last name is in `skip` (a VLM's lm_head) stay as they are."""
    if kind not in BASE_WEIGHTS:
        raise ValueError(f"base weights {kind!r} must be one of {', '.join(BASE_WEIGHTS)}")
    if kind == "bf16":
        return
    try:
        from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    except ImportError:
        raise ValueError(f"base weights {kind} need torchao (pip install torchao==0.18.0)") from None
    quantize_(module, Int8WeightOnlyConfig() if kind == "int8" else Float8WeightOnlyConfig(),
              filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn.split(".")[-1] not in skip)
    # peft's torchao LoRA layer warns that it cannot merge into 8-bit weights; a LoRA here is never merged.
    warnings.filterwarnings("ignore", message="TorchaoLoraLinear was instantiated without", category=UserWarning)


def check_prompts(prompt: str | list[str]) -> None:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise ValueError("the prompt is empty")
    for p in prompts:
        check_prompt(p)


def check_size(size: int, multiple: int) -> None:
    if size <= 0 or size % multiple:
        raise ValueError(f"image size {size} must be a positive multiple of {multiple}")


class FluxGenerator(Generator):
    """FLUX.1 (schnell, dev): packed 2x2 latents, timestep = sigma, T5 + CLIP conditioning, optional guidance
    embedding (dev)."""

    def encode_prompt(self, prompt: str | list[str]) -> Conditioning:
        check_prompts(prompt)
        with torch.no_grad():
            embeds, pooled, _ = self.pipe.encode_prompt(prompt, prompt_2=None, device=self.device,
                                                        max_sequence_length=self.preset.max_sequence_length)
        return Conditioning({"prompt_embeds": embeds, "pooled_prompt_embeds": pooled})

    def _latent_hw(self, size: int) -> int:
        check_size(size, 2 * self.pipe.vae_scale_factor)  # latents are packed in 2x2 patches
        return size // self.pipe.vae_scale_factor

    def initial_noise(self, seed: int, size: int) -> torch.Tensor:
        h = self._latent_hw(size)
        c = self.transformer.config.in_channels // 4
        noise = torch.randn((1, c, h, h), generator=torch.Generator().manual_seed(seed))
        return self.pipe._pack_latents(noise, 1, c, h, h).to(self.device, self.transformer.dtype)

    def _image_ids(self, size: int) -> torch.Tensor:
        h = self._latent_hw(size) // 2
        ids = torch.zeros(h, h, 3)
        ids[..., 1] = torch.arange(h)[:, None]
        ids[..., 2] = torch.arange(h)[None, :]
        return ids.reshape(h * h, 3).to(self.device, self.transformer.dtype)

    def velocity(self, latents: torch.Tensor, sigma: float, cond: Conditioning) -> torch.Tensor:
        size = int(round((latents.shape[1] ** 0.5) * 2 * self.pipe.vae_scale_factor))
        embeds = cond.tensors["prompt_embeds"]
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((latents.shape[0],), self.preset.guidance, device=self.device)
        dtype = self.transformer.dtype
        return self.transformer(
            hidden_states=latents.to(dtype), timestep=torch.full((latents.shape[0],), sigma, device=self.device),
            guidance=guidance, pooled_projections=cond.tensors["pooled_prompt_embeds"].to(dtype),
            encoder_hidden_states=embeds.to(dtype),
            txt_ids=torch.zeros(embeds.shape[1], 3, device=self.device, dtype=dtype),
            img_ids=self._image_ids(size), return_dict=False,
        )[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        size = int(round((latents.shape[1] ** 0.5) * 2 * self.pipe.vae_scale_factor))
        x = self.pipe._unpack_latents(latents, size, size, self.pipe.vae_scale_factor)
        x = x / self.vae.config.scaling_factor + self.vae.config.shift_factor
        return (self.vae.decode(x.to(self.vae.dtype), return_dict=False)[0].float() + 1) / 2

    def schedule_kwargs(self, steps: int, size: int) -> dict:
        seq_len = (self._latent_hw(size) // 2) ** 2
        cfg = self.pipe.scheduler.config
        mu = calculate_shift(seq_len, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                             cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))
        return {"sigmas": np.linspace(1.0, 1 / steps, steps), "mu": mu}

    def sigmas(self, steps: int, size: int) -> list[float]:
        kwargs = self.schedule_kwargs(steps, size)
        self.pipe.scheduler.set_timesteps(sigmas=kwargs["sigmas"], mu=kwargs["mu"])
        return [float(s) for s in self.pipe.scheduler.sigmas]

    def pipeline_kwargs(self, size: int) -> dict:
        return {"guidance_scale": self.preset.guidance, "max_sequence_length": self.preset.max_sequence_length}


class SanaGenerator(Generator):
    """Sana: DC-AE latents (32x down), timestep = 1000 sigma, Gemma conditioning, classifier-free guidance in one
    batch."""

    def encode_prompt(self, prompt: str | list[str]) -> Conditioning:
        check_prompts(prompt)
        with torch.no_grad():
            embeds, mask, neg, neg_mask = self.pipe.encode_prompt(
                prompt, do_classifier_free_guidance=self.preset.guidance > 1, device=self.device,
                max_sequence_length=self.preset.max_sequence_length)
        tensors = {"prompt_embeds": embeds, "prompt_attention_mask": mask}
        if neg is not None:
            tensors |= {"negative_prompt_embeds": neg, "negative_prompt_attention_mask": neg_mask}
        return Conditioning(tensors)

    def initial_noise(self, seed: int, size: int) -> torch.Tensor:
        check_size(size, 32)  # SanaPipeline refuses other sizes
        h = size // self.pipe.vae_scale_factor
        c = self.transformer.config.in_channels
        noise = torch.randn((1, c, h, h), generator=torch.Generator().manual_seed(seed))
        return noise.to(self.device, self.transformer.dtype)

    def velocity(self, latents: torch.Tensor, sigma: float, cond: Conditioning) -> torch.Tensor:
        t = cond.tensors
        embeds, mask = t["prompt_embeds"], t["prompt_attention_mask"]
        cfg = "negative_prompt_embeds" in t
        x = latents
        if cfg:  # unconditional and conditional in one batch, as the pipeline does
            x = torch.cat([latents, latents])
            embeds = torch.cat([t["negative_prompt_embeds"], embeds])
            mask = torch.cat([t["negative_prompt_attention_mask"], mask])
        dtype = self.transformer.dtype
        timestep = torch.full((x.shape[0],), sigma * 1000 * self.transformer.config.timestep_scale,
                              device=self.device)
        v = self.transformer(x.to(dtype), encoder_hidden_states=embeds.to(dtype), encoder_attention_mask=mask,
                             timestep=timestep, return_dict=False)[0].float()
        if cfg:
            uncond, text = v.chunk(2)
            v = uncond + self.preset.guidance * (text - uncond)
        return v

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        x = latents / self.vae.config.scaling_factor
        return (self.vae.decode(x.to(self.vae.dtype), return_dict=False)[0].float() + 1) / 2

    def pipeline_kwargs(self, size: int) -> dict:
        # negative_prompt=None: the negative embeddings come with the conditioning already.
        return {"guidance_scale": self.preset.guidance, "use_resolution_binning": False, "negative_prompt": None,
                "max_sequence_length": self.preset.max_sequence_length}


FLUX_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
                "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")
# The official code also targets the feed-forward convolutions. `ff.conv_depth` is left out: it is a depthwise
# convolution (groups = channels, 11 200 in Sana 1.6B) and peft 0.21 refuses LoRA on a grouped convolution unless
# the rank is a multiple of the groups.
SANA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.conv_inverted", "ff.conv_point")


def random_flux(size: str, preset: Preset) -> FluxPipeline:
    """Flux from configs with random weights; a multi-step preset (dev) gets its guidance embedding and shifting."""
    multi_step = preset.inference_steps > 1
    return random_models.build_flux(size, guidance_embeds=multi_step and preset.guidance > 0,
                                    dynamic_shifting=multi_step)


def random_sana(size: str, preset: Preset) -> SanaPipeline:
    return random_models.build_sana(size)


@dataclass(frozen=True)
class Family:
    """Everything that depends on a generator family, in one record."""

    pipeline: type  # the diffusers pipeline `from_pretrained` loads
    adapter: type[Generator]  # our adapter around it
    lora_targets: tuple[str, ...]  # the modules a LoRA adapts unless a preset names others
    random: Callable[[str, Preset], object]  # a pipeline from configs with random weights ("tiny" or "full")
    seconds_per_step: float  # one optimization step at 512 px on a ZeroGPU large slice (half a card), before steering:
    # a generous prediction (the GPU suite in BENCHMARKS.md is what measures it), behind each call's duration request


FAMILIES: dict[str, Family] = {
    # Flux (12B, 512 px) is about 0.7 s per step on an A100 in the paper (66 s for 100 steps)
    "flux": Family(FluxPipeline, FluxGenerator, FLUX_TARGETS, random_flux, seconds_per_step=1.0),
    "sana": Family(SanaPipeline, SanaGenerator, SANA_TARGETS, random_sana, seconds_per_step=0.6),
}


def family(name: str) -> Family:
    """A generator family's record; an unknown name is an error naming it, never another family's default."""
    if name not in FAMILIES:
        raise ValueError(f"unknown generator family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]
