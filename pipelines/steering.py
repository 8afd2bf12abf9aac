"""What keeps a run's picture the prompt's picture while the judge's answer changes.

The loop (`optimize.py`) reaches the judge's target by the shortest path, and the shortest path is often not the one a
person wanted: a beach turned into a tiled night lake gets P 0.99 from the toy judge (EVALUATION.md). Three remedies
and one alarm, each an option of `optimize`:

- `judged_views`: the judge sees several random views of the overlaid image (shifted, zoomed, blurred, noisy) and the
  loss averages them. A pixel pattern that fools the judge in one framing rarely survives all of them, while a moved
  horizon does (the trick CLIP-guided generation uses with its cutouts). The overlay is composited before the view is
  taken, so line and image move together and the question stays true.
- Several noises per step (`optimize(noises=...)`): the LoRA must work for a batch of pictures, not one.
- `keep_loss`: the picture's colours and its texture stay those of the base model's picture for the same noise. The
  colours are compared as sets (each colour's nearest in the other picture: a horizon may move while the sky keeps
  its blue), the texture as high-frequency energy the base did not have.
- `guard`: after the run, the unseen seeds at LoRA scale 1 against scale 0, with no analytic truth (usable with the
  real models): grid texture or soft blotches gained, diversity lost, the prompt no longer shown. It warns; it does
  not undo.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

LUMA = (0.299, 0.587, 0.114)

# The guard's lines: where a run's unseen pictures stop looking like the base model's (see `guard`).
TEXTURE_WARN = 1.25  # high-frequency energy after / before
BLOTCH_WARN = 1.6  # mid-frequency energy after / before (`mid_frequency`)
DIVERSITY_WARN = 0.5  # spread of the unseen seeds' pictures after / before
PROMPT_DROP_WARN = 0.25  # fall of the judge's P("the image shows the prompt")


# A step's FLOPs by part for flux-schnell + Qwen2.5-VL-7B at 512 px, checkpointing on (BENCHMARKS.md, the cost
# model): the VLM's forward and backward 14.91 of 76.7 TFLOP; a no-grad forward of the transformer and the VAE
# decoder a quarter of their 54.97 + 6.80 (`CostReport.steering_flops`).
VLM_SHARE = 14.91 / 76.7
BASE_PASS_SHARE = (54.97 + 6.80) / 4 / 76.7


def step_cost(views: int = 0, noises: int = 1, keep: float = 0.0, questions: int = 1) -> float:
    """A step with these steering options over the plain step, in FLOPs (predicted from the cost model's shares):
    each view and each question more (the prompt's own, `keep_prompt`) runs the VLM again, each noise the whole
    step, and `keep` one no-grad pass to the base picture."""
    rows = max(views, 1) * max(questions, 1)
    return noises * (1 + VLM_SHARE * (rows - 1) + (BASE_PASS_SHARE if keep else 0.0))


# ---------- views ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Views:
    """Random differentiable views of an image for the judge.

    Args:
        count: views per image (0 or 1 with nothing random: the image itself).
        shift: largest translation, as a fraction of the side.
        zoom: largest zoom-in: a view shows at least 1 - zoom of the side.
        blur: chance of a light 3x3 blur.
        noise: standard deviation of added pixel noise (0..1 scale).
    """

    count: int = 4
    shift: float = 0.04
    zoom: float = 0.12
    blur: float = 0.5
    noise: float = 0.02


def judged_views(pixels: torch.Tensor, views: Views, generator: torch.Generator) -> list[torch.Tensor]:
    """`views.count` random views of `pixels` ((1, 3, H, W), 0..1), each (1, 3, H, W); gradients flow through."""
    if views.count <= 0:
        return [pixels]
    n = views.count
    zoom, shift_x, shift_y, blur = torch.rand(4, n, generator=generator)
    scale = 1 - views.zoom * zoom
    room = 1 - scale  # a zoomed view may move this far within the image without showing the border
    tx = (2 * shift_x - 1) * (room + views.shift)
    ty = (2 * shift_y - 1) * (room + views.shift)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = scale, scale, tx, ty
    theta = theta.to(pixels)
    grid = F.affine_grid(theta, [n, *pixels.shape[1:]], align_corners=False)
    out = F.grid_sample(pixels.expand(n, -1, -1, -1), grid, padding_mode="border", align_corners=False)
    blurred = F.avg_pool2d(out, 3, stride=1, padding=1, count_include_pad=False)
    use_blur = (blur < views.blur).to(pixels).view(n, 1, 1, 1)
    out = use_blur * blurred + (1 - use_blur) * out
    out = out + views.noise * torch.randn(out.shape, generator=generator).to(out)
    out = out + (out.clamp(0, 1) - out).detach()  # the VLM sees 0..1; the gradient passes where it saturates
    return list(out.split(1))


# ---------- the preservation term ------------------------------------------------------------------------------


def high_frequency_map(pixels: torch.Tensor) -> torch.Tensor:
    """|luminance - its 3x3 average| per pixel, (B, 1, H, W): flat gradients give little, tiling and stripes a lot."""
    lum = (pixels * torch.tensor(LUMA).to(pixels).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return (lum - F.avg_pool2d(lum, 3, stride=1, padding=1, count_include_pad=False)).abs()


def colour_distance(pixels: torch.Tensor, base: torch.Tensor, side: int = 32) -> torch.Tensor:
    """How far apart the colours of two images ((1, 3, H, W) each) are, whatever their layout and proportions: the
    mean distance from each colour of one (at `side` px) to the nearest colour of the other, both ways (a Chamfer
    distance). A moved horizon keeps both images' colours (more ground, less sky); a night lake for a beach does
    not. A distribution distance (sliced Wasserstein) was tried first and counted a horizon moved by a third of
    the image half as far as turning the scene to night."""
    a = F.adaptive_avg_pool2d(pixels, side).flatten(2)[0].T
    b = F.adaptive_avg_pool2d(base, side).flatten(2)[0].T
    nearest = torch.cdist(a, b)
    return 0.5 * (nearest.min(1).values.mean() + nearest.min(0).values.mean())


HELD = ("colours", "layout", "texture")  # what `keep_loss` can hold


# Measured on the toy world's horizon protocol (EVALUATION.md, 2026-12-07): 1.0 and 0.3 keep the pictures as clean
# as the base's but hold the horizon back; 0.1 keeps them clean (artefacts x1.02) and moves it.
TEXTURE_WEIGHT = 0.1


def texture_gain(pixels: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Texture the picture gained over the base's: the log ratio of their high-frequency energy (0 when it has no
    more), times `TEXTURE_WEIGHT`. Scale-free, so a tiling that doubles the energy costs the same whatever the
    scene; the difference of means it replaces (0..1 pixels, about 0.01 for a tiling) was too small beside the
    judge's loss to hold anything, and the tilings stayed."""
    ratio = (high_frequency_map(pixels).mean() + 1e-3) / (high_frequency_map(base).mean() + 1e-3)
    return TEXTURE_WEIGHT * F.relu(torch.log(ratio))


def layout_distance(pixels: torch.Tensor, base: torch.Tensor, side: int = 8) -> torch.Tensor:
    """Where light and dark are, whatever the colours: the two pictures' luminance at `side` x `side`, each
    standardised (so a recolouring that keeps the light's pattern costs nothing), compared cell by cell."""
    luma = torch.tensor(LUMA).to(pixels).view(1, 3, 1, 1)
    small = [F.adaptive_avg_pool2d((x * luma).sum(1, keepdim=True), side).flatten() for x in (pixels, base)]
    a, b = ((x - x.mean()) / (x.std() + 1e-3) for x in small)
    return 0.1 * (a - b).abs().mean()  # 0.1: about the scale of `colour_distance` for a changed scene


def held(changed: Iterable[str]) -> tuple[str, ...]:
    """What `keep_loss` holds when the visual prompts ask to change `changed` (their `Control.changes`): the rest,
    and the texture always."""
    changed = set(changed)
    return tuple(h for h in HELD if h not in changed or h == "texture")


def keep_loss(pixels: torch.Tensor, base: torch.Tensor, hold: Iterable[str] = ("colours", "texture")) -> torch.Tensor:
    """How far a picture strayed from the base model's picture for the same noise in what it should keep (`hold`,
    of HELD): its colours (`colour_distance`; a horizon question does not ask about them), its layout
    (`layout_distance`; a palette question does not ask about it), and texture it did not have (high-frequency
    energy above the base's)."""
    terms = {"colours": lambda: colour_distance(pixels, base), "layout": lambda: layout_distance(pixels, base),
             "texture": lambda: texture_gain(pixels, base)}
    return sum((terms[h]() for h in hold), torch.zeros((), device=pixels.device))


# ---------- the guard --------------------------------------------------------------------------------------------


def high_frequency(image: Image.Image | np.ndarray) -> float:
    """Mean |luminance - its 3x3 average| of an image (0..255 scale): `high_frequency_map` on a picture."""
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    pixels = torch.from_numpy(array).permute(2, 0, 1)[None]
    return float(high_frequency_map(pixels).mean())


# The band `mid_frequency` keeps, as fractions of the image's width: 1.5 and 6 px at the toy world's 112 px.
MID_BAND = (1 / 75, 1 / 19)


def mid_frequency(image: Image.Image) -> float:
    """Mean |luminance blurred a little - blurred a lot| (0..255 scale): blotches and soft tiles a few percent of
    the image wide, which the 3x3 `high_frequency` misses. On the toy world at 100 steps (EVALUATION.md, "The guard's
    blotch line"): the palette LoRAs whose sheets show tiles x1.6-2.9 (3x3 energy x0.9-1.3), the default's horizon
    LoRAs x0.85-1.48 but one, the method's x2.3-9.0."""
    lum = image.convert("L")
    fine, coarse = (np.asarray(lum.filter(ImageFilter.GaussianBlur(f * lum.width)), dtype=np.float32)
                    for f in MID_BAND)
    return float(np.abs(fine - coarse).mean())


def diversity(images: list[Image.Image]) -> float:
    """Mean pairwise distance between pictures (0..1 colour scale, at 32 px): how different the seeds came out."""
    small = [np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR), dtype=np.float32) / 255 for im in images]
    pairs = [np.abs(a - b).mean() for i, a in enumerate(small) for b in small[i + 1:]]
    return float(np.mean(pairs)) if pairs else float("nan")


@dataclass
class Guard:
    """The unseen seeds after the run (LoRA scale 1) against before (scale 0), and the warnings they raise."""

    texture: float  # high-frequency energy after / before
    diversity: float  # spread across seeds after / before (nan with one seed)
    prompt_p: tuple[float, float] | None = None  # the judge's P(the image shows the prompt), before and after
    warnings: list[str] = field(default_factory=list)
    blotches: float = float("nan")  # mid-frequency energy after / before (nan: not measured)

    def as_dict(self) -> dict[str, object]:
        return {"texture_ratio": round(self.texture, 3),
                "diversity_ratio": None if np.isnan(self.diversity) else round(self.diversity, 3),
                "prompt_p": None if self.prompt_p is None else [round(p, 3) for p in self.prompt_p],
                "blotch_ratio": None if np.isnan(self.blotches) else round(self.blotches, 3),
                "warnings": self.warnings}

    def line(self) -> str:
        """One line for the CLI and the page: the warning, or that the pictures look like the base model's."""
        if self.warnings:
            return "the judge may be fooled: " + "; ".join(self.warnings)
        return "the unseen pictures keep the base model's texture, variety and prompt"


def guard(before: list[Image.Image], after: list[Image.Image],
          prompt_p: tuple[float, float] | None = None) -> Guard:
    """Compare the unseen seeds' pictures after a run with the same seeds before it.

    Args:
        before, after: the same seeds at LoRA scale 0 and 1.
        prompt_p: the judge's mean P("Does this image show {prompt}?") before and after, where known.
    """
    def gained(measure: Callable[[Image.Image], float]) -> float:  # mean after / mean before
        return float(np.mean([measure(im) for im in after]) / max(np.mean([measure(im) for im in before]), 1e-6))

    texture, blotches = gained(high_frequency), gained(mid_frequency)
    spread = diversity(after) / max(diversity(before), 1e-6) if len(before) > 1 else float("nan")
    warnings = []
    if texture > TEXTURE_WARN:
        warnings.append(f"the picture gained a grid texture (high-frequency energy x{texture:.1f})")
    if blotches > BLOTCH_WARN:
        warnings.append(f"the picture gained blotches or soft tiles (mid-frequency energy x{blotches:.1f})")
    if spread < DIVERSITY_WARN:
        warnings.append(f"the seeds collapsed to one picture (diversity x{spread:.2f})")
    if prompt_p is not None and prompt_p[0] - prompt_p[1] > PROMPT_DROP_WARN:
        warnings.append(f"it lost its prompt (P {prompt_p[0]:.2f} -> {prompt_p[1]:.2f})")
    return Guard(texture, float(spread), prompt_p, warnings, blotches=blotches)
