"""Model presets as data: which generator, which VLM, and how to optimize.

A source is a hub id ("org/name"), a local folder, or "random:tiny" / "random:full" for models built
in code from configs with random weights (see `random_models.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import world

SANA_CODE = "https://github.com/NVlabs/Sana"  # ModelSpec's implementation of a Sana LoRA

# The toy preset's steering (`steering.py`), the best measured on the toy world's Table 6 protocol (EVALUATION.md):
# the preservation term with 4 judged views and the prompt's own question. Judge run 17, at this preset's 60 steps:
# horizon 0.061, 14/15 scenes kept, alignment P 0.91 (without the prompt's question 0.070, 0.88; keep alone 0.093);
# at the paper's 100 steps 0.035, 14/15, the judge fooled in none, artefacts x0.86; at 15 s a LoRA 0.053 (without the
# question 0.050). The real presets keep the paper's method: README, "How close to the paper and its official
# code", says why.
STEERING_KEEP = 5.0
STEERING_VIEWS = 4

# What the page's fields open with (`Preset.page_default`); a preset whose generator knows only a few prompts
# replaces them with ones it can draw.
PAGE_DEFAULTS = {
    "visual": "a tropical beach at sunset", "apply": "a desert at noon",
    "ask": "a red apple on a wooden table next to a glass of milk",
    "ask_questions": "Is there a red apple in the image? | Yes\nIs there a glass of milk? | Yes",
    "lora": "a lighthouse on a cliff", "score": "a red bicycle leaning on a brick wall",
    "refine": "a cat on a windowsill",
    "self_improve": "a cat on a windowsill\na lighthouse on a cliff\na bowl of ramen\na city street in the rain",
}


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    generator: str  # family, a key of generator.FAMILIES: "flux" | "sana"
    generator_source: str
    vlm: str  # family, a key of vlm.FAMILIES: "qwen2_5_vl" | "idefics2"
    vlm_source: str
    dtype: str = "bfloat16"  # frozen weights; LoRA weights are always fp32
    resolution: int = 512
    inference_steps: int = 1
    guidance: float = 0.0  # Flux-dev: guidance embedding; Sana: classifier-free guidance scale
    max_sequence_length: int = 256  # T5 tokens: schnell's limit is 256, dev's default 512
    # One-step models train on the user's own sample: x_t = the initial noise, sigma = 1. `renoise=(lo, hi)` instead
    # generates x0 without gradient and re-noises it to a sigma drawn from (lo, hi): a path inference never takes.
    renoise: tuple[float, float] | None = None
    lora_rank: int = 16
    lora_alpha: float | None = None  # None: 5 x rank ("a high alpha is crucial" for the VLM to see it)
    lora_targets: tuple[str, ...] = ()  # modules the LoRA adapts; () = the family's (`Generator.lora_targets`)
    learning_rate: float = 5e-5
    steps: int = 100
    # A self-rewarding round's DPO on the VLM's LoRA (`self_reward.self_improve`): learning rate and epochs
    dpo_learning_rate: float = 5e-5
    dpo_epochs: int = 3
    random_vlm_size: str = "full-7b"  # which full-size Qwen a `random:full` benchmark builds
    # Recompute activations in the backward pass (transformer and VAE decoder): less memory, more time.
    gradient_checkpointing: bool = True
    # Early stopping: end the run once the running mean P(expected answers) passes this (None: run every step).
    target_p: float | None = None
    # Steering that keeps the picture (`steering.py`): judged views per image, initial noises per step, and the
    # preservation term's weight. 0, 1, 0 is the paper's method.
    views: int = 0
    noises: int = 1
    keep: float = 0.0
    # Also ask "Does this image show {prompt}?" (expected Yes) by default: the CLI's --keep-prompt and the app's
    # tick box start from it. Off is the paper's method.
    keep_prompt: bool = False
    known_scenes: tuple[str, ...] = ()  # a toy world's scenes, one of which its prompts name (empty: any prompt)
    page_defaults: tuple[tuple[str, str], ...] = ()  # (field, text) replacing PAGE_DEFAULTS for this preset
    trained_controls: tuple[str, ...] | None = None  # the visual prompts the VLM answers (None: all)
    notes: tuple[str, ...] = field(default_factory=tuple)
    # The memory plan (BENCHMARKS.md, `pipelines.bench --cost`): frozen transformer weights as loaded ("bf16") or
    # 8-bit weight-only ("int8", "fp8"; torchao), and text encoders that wait on the CPU between prompts.
    base_weights: str = "bf16"
    offload_text_encoders: bool = True
    # ModelSpec: the base model's architecture name ("/lora" is appended) and where its code lives.
    architecture: str = "flux-1-schnell"
    implementation: str = "https://github.com/black-forest-labs/flux"

    @property
    def alpha(self) -> float:
        return self.lora_alpha if self.lora_alpha is not None else 5.0 * self.lora_rank

    @property
    def offline(self) -> bool:
        """Runs on a CPU without the hub: tiny random builds or weights in local folders (the toy world)."""
        return all(src == "random:tiny" or (not src.startswith("random:") and is_local(src))
                   for src in (self.generator_source, self.vlm_source))

    @property
    def random_weights(self) -> bool:
        return self.generator_source.startswith("random:")

    def prompt_note(self, prompt: str) -> str | None:
        """A note when the generator paints a toy world's scenes only and the prompt names none of them."""
        if not self.known_scenes or world.parse(prompt).get("scene") in self.known_scenes:
            return None
        return (f"The `{self.name}` generator paints these scenes only: {', '.join(self.known_scenes)}. Your prompt "
                "names none of them; it still generates, but expect one of these landscapes.")

    @property
    def analytic_scores(self) -> Callable[..., dict[str, float]] | None:
        """A toy world's analytic scores of an image for a prompt (`world.scores`: aesthetic, alignment,
        preference, from the pixels); None for a preset of real models, which has no such truth."""
        return world.scores if self.known_scenes else None

    def page_default(self, field: str) -> str:
        """What a page field opens with (a key of PAGE_DEFAULTS): this preset's own text, else the general one."""
        return dict(self.page_defaults).get(field, PAGE_DEFAULTS[field])

    def control_note(self, control: str) -> str | None:
        """A note when the VLM does not answer this visual prompt's questions (untrained, or trained and measured
        no better than chance): its answers then mean little."""
        if self.trained_controls is None or control in self.trained_controls:
            return None
        return (f"The `{self.name}` judge does not answer the {control} control's questions (measured no better "
                f"than chance or untrained): it knows {', '.join(self.trained_controls)} and the prompt's own "
                "question.")

    def with_sources(self, generator: str | None = None, vlm: str | None = None) -> Preset:
        """The same preset with other weights (local folders, random full-size builds)."""
        return dataclasses.replace(self, generator_source=generator or self.generator_source,
                                   vlm_source=vlm or self.vlm_source)


_TINY = dict(generator_source="random:tiny", vlm="qwen2_5_vl", vlm_source="random:tiny", dtype="float32",
             resolution=112, max_sequence_length=32, lora_rank=4, learning_rate=1e-2, steps=20,
             gradient_checkpointing=False,
             notes=("random weights: images are noise; the code path is the real one",))
TOY_DIR = Path(__file__).resolve().parent.parent / "assets" / "toy-world"

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset(name="tiny", description="Offline CPU demo: tiny Flux-shaped generator and Qwen-shaped VLM",
           generator="flux", **_TINY),
    Preset(name="tiny-dev", description="Offline CPU: tiny multi-step Flux (guidance embedding)",
           generator="flux", inference_steps=4, guidance=3.5, architecture="flux-1-dev", **_TINY),
    Preset(name="tiny-sana", description="Offline CPU: tiny Sana-shaped generator",
           generator="sana", inference_steps=4, guidance=4.5, **_TINY | {"resolution": 128},
           architecture="sana-1600m", implementation=SANA_CODE),
    Preset(name="tiny-idefics2", description="Offline CPU: tiny Flux-shaped generator, tiny Idefics2-shaped VLM",
           generator="flux", **_TINY | {"vlm": "idefics2"}),
    Preset(name="toy", description="Offline CPU: the trained toy world (tiny Flux-shaped one-step generator of "
                                   "landscapes that reads a grammar of prompts, tiny Qwen2.5-VL-shaped judge that "
                                   "answers, scores, rewrites and describes)",
           generator="flux", generator_source=str(TOY_DIR / "generator"), vlm="qwen2_5_vl",
           vlm_source=str(TOY_DIR / "vlm"), dtype="float32", resolution=world.SIZE, max_sequence_length=32,
           lora_rank=4, learning_rate=5e-4, steps=60, gradient_checkpointing=False, architecture="toy-flux",
           keep=STEERING_KEEP, views=STEERING_VIEWS, keep_prompt=True,
           # 5e-5 x 3 epochs leaves the 4-layer VLM as it was (DPO loss 0.6931 -> 0.6931); EVALUATION.md used these
           dpo_learning_rate=1e-3, dpo_epochs=10,
           known_scenes=tuple(world.SCENES), trained_controls=("horizon", "palette", "line-weight"),
           page_defaults=tuple(world.PAGE_DEFAULTS.items()),
           notes=("trained toy weights: landscapes of a grammar of prompts (8 scenes, times of day, sky, horizon "
                  "placement, sun or moon, a lone tree, colour mood, birds)",)),
    # The flagship fits ZeroGPU's default 48 GB slice: checkpointing on, text encoders offloaded, and an int8
    # transformer (predicted 33.5 GiB per step, 35.8 GiB while a prompt is encoded; bf16 would be 44.5 / 46.9 GiB,
    # no margin). BENCHMARKS.md, "The memory plan"; `--base-weights bf16` on an 80 or 96 GB card.
    Preset(name="flux-schnell", description="FLUX.1-schnell (1 step) + Qwen2.5-VL-7B-Instruct",
           generator="flux", generator_source="black-forest-labs/FLUX.1-schnell", base_weights="int8",
           vlm="qwen2_5_vl", vlm_source="Qwen/Qwen2.5-VL-7B-Instruct"),
    Preset(name="flux-schnell-idefics2", description="FLUX.1-schnell (1 step) + Idefics2-8B (commonsense)",
           generator="flux", generator_source="black-forest-labs/FLUX.1-schnell",
           vlm="idefics2", vlm_source="HuggingFaceM4/idefics2-8b"),
    Preset(name="flux-dev", description="FLUX.1-dev (28 steps, guidance 3.5) + Qwen2.5-VL-7B-Instruct",
           generator="flux", generator_source="black-forest-labs/FLUX.1-dev", inference_steps=28, guidance=3.5,
           max_sequence_length=512, architecture="flux-1-dev",
           vlm="qwen2_5_vl", vlm_source="Qwen/Qwen2.5-VL-7B-Instruct"),
    Preset(name="sana", description="Sana 1.6B 512px (20 steps) + Qwen2.5-VL-3B-Instruct",
           generator="sana", generator_source="Efficient-Large-Model/Sana_1600M_512px_diffusers",
           inference_steps=20, guidance=4.5, learning_rate=5e-6,
           vlm="qwen2_5_vl", vlm_source="Qwen/Qwen2.5-VL-3B-Instruct", random_vlm_size="full-3b",
           architecture="sana-1600m", implementation=SANA_CODE),
]}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}") from None


def is_local(source: str) -> bool:
    """Hub ids look like 'org/name'. A source that starts like a path, exists, has more than two parts, or
    whose first part is a folder here (a mistyped 'models/flux') is a local folder."""
    path = Path(source).expanduser()
    return (source.startswith(("/", ".", "~")) or path.exists() or len(path.parts) != 2
            or Path(path.parts[0]).is_dir())


def check_source(source: str) -> str:
    """Return the source; a missing local folder raises an error that lists what is beside it."""
    if source.startswith("random:"):
        if source not in ("random:tiny", "random:full"):
            raise ValueError(f"unknown random build {source!r}; available: random:tiny, random:full")
        return source
    if is_local(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            parent = path.parent if path.parent.is_dir() else Path(".")
            found = sorted(p.name for p in parent.iterdir() if p.is_dir())
            raise FileNotFoundError(f"model folder {source!r} does not exist; folders in {str(parent)!r}: "
                                    f"{', '.join(found) or '(none)'}")
    return source
