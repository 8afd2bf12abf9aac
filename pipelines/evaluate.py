"""Measure the method with an independent judge: the paper's Table 6 protocol, and its palette analogue.

    python -m pipelines.evaluate horizon --preset toy --keep-prompt --out-dir eval/horizon
    python -m pipelines.evaluate palette --preset toy --out-dir eval/palette
    accelerate launch --num_processes 2 --cpu -m pipelines.evaluate horizon --preset toy --out-dir eval/horizon

Horizon (Table 6 of the paper): 3 prompts x 5 lines evenly spaced from 0.2 to 0.8; one LoRA per (prompt, line);
each LoRA and the base model generate the same 5 unseen seeds; an estimator reads each image's horizon and the
distance |estimated - line| (a fraction of the height) is averaged. "No control" is the base model on those seeds.
Palette: 3 prompts x palette presets; the distance is the mean CIEDE2000 from the image's dominant colours to the
palette's nearest swatch.

The VLM's own P(expected answers) is what the loop optimizes and can be fooled; the estimator is the truth. Each
run also reports the alignment score (P(Yes) to "Does this image show {prompt}?"), whether the images still show the
prompt's scene (toy world: read from the pixels), whether they kept what the control did not ask about (its
things, and for a palette the horizon: `rest_kept`), their artefacts (toy world: high-frequency energy against clean
renders, 1 = clean; tiles and stripes score several times that), and whether the judge was fooled (P above 0.9 while
the analytic distance stays above its threshold).

The estimator is pluggable: `--estimator analytic` (the toy world's `horizon_of`) or `--estimator module:function`
for any callable taking a PIL RGB image and returning the horizon height as a fraction of the image height from the
top (e.g. a Perspective Fields wrapper on a GPU machine). Runs are sharded over `accelerate` processes (GPUs where
present, `--cpu` processes here); the table is the same as with one process.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from overlays import CONTROLS, composite, horizon, palette

from . import world
from .optimize import optimize, prompt_question, score_image, with_prompt_guard
from .steering import held
from .vlm import from_pil

LINES = (0.2, 0.35, 0.5, 0.65, 0.8)  # Table 6: five lines about equally spaced over the height
SEEDS = 5  # unseen seeds per LoRA
TOY_PROMPTS = ("a beach at noon", "a green field", "a snowy plain")
PAPER_PROMPTS = ("A teddy bear riding a skateboard in Times Square", "A dutch landscape painting", "A tropical beach")
PALETTES = ("ocean", "autumn", "desert", "pastel")
FOOLED_P = 0.9  # a judge is fooled when its P passes this ...
FOOLED_HORIZON = 0.1  # ... while the analytic horizon distance stays above this
FOOLED_PALETTE = world.PALETTE_MATCH  # ... or the palette distance above the judge's own match threshold

HorizonEstimator = Callable[[Image.Image], float]

# The rows an evaluation can run (`--variants`): the paper's method, and what `steering.py` adds to it, alone and
# together. Each is `optimize`'s keyword arguments, plus "keep_prompt" (the prompt's own question as a guard); every
# steering option is set, so that a row means the same whatever the preset's defaults.
PAPER = {"views": 0, "noises": 1, "keep": 0.0}
VARIANTS: dict[str, dict[str, object]] = {
    "method": PAPER,
    "keep-prompt": PAPER | {"keep_prompt": True},
    "views": PAPER | {"views": 4},
    "noises": PAPER | {"noises": 2},
    "keep": PAPER | {"keep": 5.0},
    "keep-views": PAPER | {"keep": 5.0, "views": 4},
    "keep-views-prompt": PAPER | {"keep": 5.0, "views": 4, "keep_prompt": True},
    "keep-plus-prompt": PAPER | {"keep": 5.0, "keep_prompt": True},
    "all": {"keep_prompt": True, "views": 4, "noises": 2, "keep": 5.0},
}


def variant_label(name: str) -> str:
    return name if name == "method" else f"method + {name}"


def analytic_horizon(image: Image.Image) -> float:
    """The toy world's estimator: horizon height from pixels (error <= 0.011 on its renders)."""
    return world.horizon_of(image)[0]


def load_estimator(name: str) -> HorizonEstimator:
    """`analytic`, or `module:function` naming any callable image -> horizon height fraction."""
    if name == "analytic":
        return analytic_horizon
    module, _, attr = name.partition(":")
    if not attr:
        raise ValueError(f"estimator {name!r} must be 'analytic' or 'module:function'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"estimator {name!r} cannot be loaded ({exc})") from None


@dataclass(frozen=True)
class Run:
    """One LoRA of the protocol: a prompt, a target (horizon line or palette preset) and a variant."""

    index: int  # position in the plan
    task: str  # "horizon" | "palette"
    prompt: str
    target: float | str
    key: str = "method"  # a key of VARIANTS
    seed: int = 0  # LoRA initialisation, training noise and unseen seeds: the same for every variant (paired)

    @property
    def variant(self) -> str:
        return variant_label(self.key)

    @property
    def keep_prompt(self) -> bool:
        return bool(VARIANTS[self.key].get("keep_prompt"))

    @property
    def options(self) -> dict[str, object]:
        """`optimize`'s keyword arguments for this variant."""
        return {k: v for k, v in VARIANTS[self.key].items() if k != "keep_prompt"}


def plan(task: str, prompts: Sequence[str], targets: Sequence[float | str], variants: Sequence[str] = ("method",),
         first_seed: int = 0) -> list[Run]:
    """Every run of the protocol in a fixed order; each run's seed (`first_seed` + its place) depends on its (prompt,
    target) alone, so shards reproduce one process and the variants see the same noise and unseen seeds."""
    for key in variants:
        if key not in VARIANTS:
            raise ValueError(f"unknown variant {key!r}; available: {', '.join(VARIANTS)}")
    pairs = [(p, t) for p in prompts for t in targets]
    return [Run(v * len(pairs) + i, task, p, t, key, seed=first_seed + i) for v, key in enumerate(variants)
            for i, (p, t) in enumerate(pairs)]


def drawn(draw: int, lines: int, known_scenes: Sequence[str]) -> tuple[list[float], list[str], int]:
    """`--draw`: lines uniform in 0.15..0.85, three of the preset's scenes and the runs' first seed, all drawn from
    `draw`, so a table measures the method where no tuning looked (fixed lines measure only those lines)."""
    rng = np.random.default_rng(draw)
    targets = sorted(round(float(x), 2) for x in rng.uniform(0.15, 0.85, lines))
    prompts = [str(p) for p in rng.choice(list(known_scenes), size=min(3, len(known_scenes)), replace=False)]
    return targets, prompts, 10**6 * (1 + draw % 1000)


def control_for(run: Run, size: int) -> tuple[np.ndarray, list[tuple[str, str]], list[tuple[int, int, int]]]:
    """(overlay, questions, palette colours or []) of a run's visual prompt."""
    if run.task == "horizon":
        spec = horizon.Spec(float(run.target))
        return np.asarray(horizon.render(spec, (size, size))), horizon.questions(spec), []
    spec = palette.Spec.from_preset(str(run.target))
    return np.asarray(palette.render(spec, (size, size))), palette.questions(spec), list(spec.colors)


@dataclass
class Measured:
    """What one run gives, on its unseen seeds, before (LoRA scale 0 = no control) and after (scale 1)."""

    run: Run
    steps: int
    seconds: float
    seeds: list[int]
    distance_before: list[float]  # analytic: horizon distance, or palette CIEDE2000
    distance_after: list[float]
    p_before: list[float]  # the VLM's P(expected answers) of the control's questions
    p_after: list[float]
    alignment_before: float  # mean P(Yes) to "Does this image show {prompt}?"
    alignment_after: float
    horizons_before: list[float] = field(default_factory=list)  # horizon task: each image's estimated horizon
    horizons_after: list[float] = field(default_factory=list)
    scene_before: list[str] = field(default_factory=list)  # toy world: the scene each image shows, read back
    scene_after: list[str] = field(default_factory=list)
    artefacts_before: list[float] = field(default_factory=list)  # toy world: `world.artefacts` of each image
    artefacts_after: list[float] = field(default_factory=list)
    rest_kept: list[bool] = field(default_factory=list)  # toy world: each seed kept what was not asked (`rest_kept`)
    fooled: bool = False
    guard: dict[str, object] = field(default_factory=dict)  # `steering.guard` on the unseen seeds: ratios, warnings

    @property
    def kept_scene(self) -> bool | None:
        """Toy world: at least half of the after-images still show the prompt's scene."""
        if not self.scene_after:
            return None
        return kept(self.scene_after, self.run.prompt)


def kept(scenes: list[str], prompt: str) -> bool:
    """At least half of `scenes` (read from images) are the scene `prompt` names."""
    return sum(s == world.parse(prompt).get("scene") for s in scenes) * 2 >= len(scenes)


REST_HORIZON = 0.05  # a palette run keeps the horizon when it moves less than this


def rest_kept(before: world.Reading, after: world.Reading, task: str) -> bool:
    """Whether a picture kept what its control did not ask about, read from the pixels of the same seed before and
    after: the things in it (a tree and its side, a sun or moon, clouds, birds) and, for a palette, the horizon
    too. A palette in this world changes the colours and so often the scene read from them ("kept the prompt's
    scene"); this says whether the rest of the picture stayed."""
    things = ("tree", "body", "clouds", "birds")
    same = all(getattr(before, k) == getattr(after, k) for k in things)
    return same and (task != "palette" or abs(before.horizon - after.horizon) <= REST_HORIZON)


def measure(run: Run, generator, vlm, estimator: HorizonEstimator, *, steps: int, seeds: int,
            target_p: float | None, budget: float | None = None) -> tuple[Measured, tuple[Image.Image, Image.Image]]:
    """Train the run's LoRA (for `steps`, or until `budget` seconds have passed), judge its unseen seeds; return the
    figures and (before, after) of the first seed."""
    size = generator.size
    overlay, questions, colors = control_for(run, size)
    asked = with_prompt_guard(questions, run.prompt) if run.keep_prompt else questions
    start = time.perf_counter()
    result = optimize(generator, vlm, run.prompt, asked, overlay=overlay, steps=steps, seed=run.seed,
                      progress=False, target_p=target_p, eval_seeds=seeds, **run.options,
                      hold=held([CONTROLS[run.task].changes]),
                      finish_now=lambda: budget is not None and time.perf_counter() - start > budget)
    unseen = result.unseen

    estimated: dict[int, float] = {}

    def distance(image: Image.Image) -> float:
        if run.task == "horizon":
            estimated[id(image)] = estimator(image)
            return abs(estimated[id(image)] - float(run.target))
        return world.palette_distance(image, colors)

    def control_p(image: Image.Image) -> float:  # the control's own questions only, without the guard
        return score_image(vlm, image, overlay, questions)

    def alignment(images: list[Image.Image]) -> float:
        guard = [(prompt_question(run.prompt), "Yes")]
        return float(np.mean([vlm.score(from_pil(im).to(vlm.device), guard) for im in images]))

    before, after = unseen.images_base, unseen.images_lora
    m = Measured(run, len(result.history), result.history[-1].elapsed if result.history else 0.0, unseen.seeds,
                 [distance(im) for im in before], [distance(im) for im in after],
                 [control_p(im) for im in before], [control_p(im) for im in after],
                 alignment(before), alignment(after))
    if "scene" in world.parse(run.prompt):  # a prompt of the toy world's grammar: its scene and artefacts read back
        readings = [[world.read(im) for im in ims] for ims in (before, after)]
        m.scene_before, m.scene_after = ([r.scene for r in rs] for rs in readings)
        m.rest_kept = [rest_kept(b, a, run.task) for b, a in zip(*readings, strict=True)]
        m.artefacts_before, m.artefacts_after = ([world.artefacts(im) for im in ims] for ims in (before, after))
    if run.task == "horizon":
        m.horizons_before = [estimated[id(im)] for im in before]
        m.horizons_after = [estimated[id(im)] for im in after]
    m.guard = unseen.guard.as_dict() if unseen.guard else {}
    threshold = FOOLED_HORIZON if run.task == "horizon" else FOOLED_PALETTE
    m.fooled = bool(np.mean(m.p_after) > FOOLED_P and np.mean(m.distance_after) > threshold)
    return m, (before[0], after[0])


# ---------- tables and pictures --------------------------------------------------------------------------------------


def summarise(task: str, measured: Sequence[Measured], budget: float | None = None) -> dict[str, object]:
    """Rows "no control", "method" (and "method + keep-prompt"): mean distance overall and per target, P, alignment,
    scene kept, artefacts and fooled counts."""
    targets = sorted({m.run.target for m in measured}, key=lambda t: (isinstance(t, str), t))
    rows: dict[str, dict[str, object]] = {}
    variants = list(dict.fromkeys(m.run.variant for m in measured))  # in the plan's order
    for name in ["no control", *variants]:
        ms = [m for m in measured if m.run.variant == (variants[0] if name == "no control" else name)]
        after = name != "no control"

        def d(m: Measured, after: bool = after) -> list[float]:
            return m.distance_after if after else m.distance_before

        row: dict[str, object] = {
            "distance": float(np.mean([x for m in ms for x in d(m)])),
            "distance_sd_over_runs": float(np.std([np.mean(d(m)) for m in ms])),  # the spread over lines and prompts
            "per_target": {str(t): float(np.mean([x for m in ms if m.run.target == t for x in d(m)])) for t in targets},
            "p": float(np.mean([x for m in ms for x in (m.p_after if after else m.p_before)])),
            "alignment": float(np.mean([m.alignment_after if after else m.alignment_before for m in ms])),
            "runs": len(ms),
        }
        read = [m for m in ms if m.scene_after]
        if read:
            def scenes(m: Measured, after: bool = after) -> list[str]:
                return m.scene_after if after else m.scene_before

            row["scene_kept"] = sum(kept(scenes(m), m.run.prompt) for m in read)
            row["scene_kept_per_target"] = {str(t): sum(kept(scenes(m), m.run.prompt) for m in read
                                                        if m.run.target == t) for t in targets}
            row["artefacts"] = float(np.mean([x for m in read for x in (m.artefacts_after if after
                                                                         else m.artefacts_before)]))
            if after and all(m.rest_kept for m in read):
                row["rest_kept"] = sum(sum(m.rest_kept) * 2 >= len(m.rest_kept) for m in read)
        spreads = [float(np.std(m.horizons_after if after else m.horizons_before)) for m in ms if m.horizons_after]
        if spreads:  # how different the unseen seeds' horizons are: 0 when every seed gives the same picture
            row["horizon_sd"] = float(np.mean(spreads))
        if after:
            row["fooled"] = sum(m.fooled for m in ms)
            row["steps_mean"] = float(np.mean([m.steps for m in ms]))
            if budget:  # equal wall-clock: the time is the point; otherwise it would make tables differ by run
                row["seconds_mean"] = float(np.mean([m.seconds for m in ms]))
            guarded = [m.guard for m in ms if m.guard]
            if guarded:  # the guard's view, without the analytic truth
                row["guard_warned"] = sum(bool(g["warnings"]) for g in guarded)
                ratios = [g["diversity_ratio"] for g in guarded if g["diversity_ratio"] is not None]
                row["diversity_ratio"] = float(np.mean(ratios)) if ratios else None
        rows[name] = row
    return {"task": task, "targets": [str(t) for t in targets], "rows": rows}


def markdown(summary: dict[str, object]) -> str:
    """The summary as a Markdown table (distances to 3 decimals; counts out of the runs)."""
    task, targets, rows = summary["task"], summary["targets"], summary["rows"]
    unit = "horizon distance (fraction of H)" if task == "horizon" else "palette distance (CIEDE2000)"
    label = "line" if task == "horizon" else "palette"
    head = ["", f"mean {unit}", *[f"{label} {t}" for t in targets], "P(expected answers)", "alignment P",
            "kept the prompt's scene", "kept the rest", "artefacts (1 = clean)", "judge fooled",
            "horizon sd over seeds", "diversity after / before", "guard warned", "steps (mean)", "seconds (mean)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, row in rows.items():
        scene = f"{row['scene_kept']}/{row['runs']}" if "scene_kept" in row else "-"
        cells = [name, f"{row['distance']:.3f}", *[f"{row['per_target'][t]:.3f}" for t in targets], f"{row['p']:.3f}",
                 f"{row['alignment']:.3f}", scene, f"{row['rest_kept']}/{row['runs']}" if "rest_kept" in row else "-",
                 f"{row['artefacts']:.2f}" if "artefacts" in row else "-",
                 f"{row['fooled']}/{row['runs']}" if "fooled" in row else "-",
                 f"{row['horizon_sd']:.3f}" if "horizon_sd" in row else "-",
                 f"{row['diversity_ratio']:.2f}" if row.get("diversity_ratio") is not None else "-",
                 f"{row['guard_warned']}/{row['runs']}" if "guard_warned" in row else "-",
                 f"{row['steps_mean']:.0f}" if "steps_mean" in row else "-",
                 f"{row['seconds_mean']:.1f}" if "seconds_mean" in row else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def contact_sheet(task: str, measured: Sequence[Measured], pairs: Sequence[tuple[Image.Image, Image.Image]],
                  cell: int = 168) -> Image.Image:
    """Per prompt (and variant) two rows, before and after, one column per target; the visual prompt on top."""
    order = list(dict.fromkeys(m.run.variant for m in measured))
    groups = sorted({(m.run.variant, m.run.prompt) for m in measured}, key=lambda g: (order.index(g[0]), g[1]))
    targets = sorted({m.run.target for m in measured}, key=lambda t: (isinstance(t, str), t))
    label_w, gap = 170, 4
    sheet = Image.new("RGB", (label_w + len(targets) * (cell + gap), len(groups) * 2 * (cell + gap) + 20), "white")
    draw = ImageDraw.Draw(sheet)
    for j, t in enumerate(targets):
        draw.text((label_w + j * (cell + gap) + 4, 4), f"{'line' if task == 'horizon' else ''} {t}", fill="black")
    by_key = {(m.run.variant, m.run.prompt, m.run.target): (m, pair) for m, pair in zip(measured, pairs, strict=True)}
    for i, (variant, prompt) in enumerate(groups):
        for r, (name, k) in enumerate((("no control", 0), (variant, 1))):
            y = 20 + (2 * i + r) * (cell + gap)
            draw.text((4, y + cell // 2 - 12), f"{prompt}\n{name}", fill="black")
            for j, t in enumerate(targets):
                if (variant, prompt, t) not in by_key:
                    continue
                m, pair = by_key[(variant, prompt, t)]
                overlay, _, _ = control_for(m.run, pair[k].width)
                shown = composite(from_pil(pair[k]), overlay)[0].clamp(0, 1)
                tile = Image.fromarray((shown.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
                sheet.paste(tile.resize((cell, cell), Image.NEAREST), (label_w + j * (cell + gap), y))
                dist = (m.distance_after if k else m.distance_before)[0]
                draw.text((label_w + j * (cell + gap) + 3, y + cell - 12), f"d={dist:.2f}", fill="white")
    return sheet


# ---------- command line ---------------------------------------------------------------------------------------------


if __name__ == "__main__":  # the command lives in pipelines/commands/evaluate.py
    from .commands.evaluate import main

    sys.exit(main())
