"""Training the toy world's VLM on the CPU (a command module: the runtime never imports it).

    python -m pipelines.world_vlm_training --out runs/world --minutes 25

The VLM is Qwen2.5-VL-shaped and learns every task the app asks of it, in the app's own words: each training row is
(image, the app's question, the answer the world's analytic truth gives), taught through the app's own chat template
and answer layout (`VLM.nll_rows`, the same path the judge is read through):

- Yes/No questions: the horizon, palette, line-weight and depth overlays' questions on images with the overlay drawn,
  "Does this image show {prompt}?", VQAScore's "Does this figure show '{prompt}'?", the same-scene question of
  image-to-prompt and the left-or-right comparison;
- rubric scores: "Score: <0-5>" and a one-line explanation in the grammar's words, for the aesthetic, alignment and
  preference rubrics, from the world's measures with noise (a real judge is not exact either);
- rewriting a short prompt into a rich one (text only), of mixed quality: some added words help the picture, some do
  nothing, some ask for another scene, so that best-of-N and a DPO round have something to choose;
- describing an image as a prompt of the grammar (image-to-prompt), and PRIP's pivot step (the request, then keywords).

`rows_for` builds a sample of rows for one image; `train` runs the loop under a wall-clock budget.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import scipy.stats
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
)

from overlays import composite, depth, horizon, line_weight, palette
from overlays.common import SUFFIX

from . import judge, refine, world
from .optimize import optimize, prompt_question
from .random_models import QWEN_CHAT_TEMPLATE, QWEN_SPECIAL_TOKENS
from .vlm import QwenVL, from_pil
from .world_training import Clock, step_with

HORIZON_YES = 0.06  # the judge says Yes to the horizon question iff the line is within this of the horizon
ROW = tuple[torch.Tensor | None, str, str]  # (pixels or None, question, answer)

# What each aesthetic rule sounds like when it holds and when it does not (the explanations' words).
RULE_WORDS = {
    "horizon on a third": ("the horizon sits on a third", "the horizon cuts the picture in the middle"),
    "level horizon": ("the horizon is level", "the horizon is tilted"),
    "subject off centre": ("the subject stands off centre", "the subject sits in the centre"),
    "sun clear of the horizon": ("the sun is clear of the horizon", "the sun touches the horizon"),
    "contrast": ("the light has contrast", "the light is flat"),
    "no texture": ("the surfaces are clean", "a grid texture covers the picture"),
}
# Words a rewrite may add, by what they do to the toy aesthetic: good ones follow its rules, useless ones do nothing
# for it, and wrong ones ask for something other than the request.
GOOD_WORDS = ["low horizon", "high horizon", "a lone tree on the left", "a lone tree on the right", "the sun",
              "clear sky", "vivid colours"]
USELESS_WORDS = ["cloudy sky", "birds in the sky", "muted colours", "the moon"]


def overlaid(image: Image.Image, overlay: Image.Image) -> torch.Tensor:
    """The image with a visual prompt on top, as the loop's judge sees it."""
    return composite(from_pil(image), np.asarray(overlay))


def horizon_line(rng: np.random.Generator, truth: world.Reading) -> horizon.Spec:
    """A line to ask about: half the time within HORIZON_YES of the horizon (Yes), else at least 0.1 away (No)."""
    if rng.random() < 0.5:
        return line_on_horizon(rng, truth)
    y = rng.uniform(0.12, 0.88)
    while abs(y - truth.horizon) < 0.1:
        y = rng.uniform(0.12, 0.88)
    return horizon.Spec(round(float(np.clip(y, 0.05, 0.95)), 3), round(float(rng.uniform(-4, 4)), 1))


def line_on_horizon(rng: np.random.Generator, truth: world.Reading) -> horizon.Spec:
    """A line the judge should say Yes to: within 0.8 HORIZON_YES of the horizon, nearly as tilted."""
    y = float(np.clip(truth.horizon + rng.uniform(-HORIZON_YES, HORIZON_YES) * 0.8, 0.05, 0.95))
    return horizon.Spec(round(y, 3), round(float(np.clip(truth.tilt + rng.uniform(-1.5, 1.5), -4, 4)), 1))


def horizon_row(rng: np.random.Generator, image: Image.Image, truth: world.Reading) -> ROW:
    return line_row(image, horizon_line(rng, truth), truth)


def line_row(image: Image.Image, spec: horizon.Spec, truth: world.Reading) -> ROW:
    """The horizon question on `image` under the line `spec`, answered by the truth."""
    yes = abs(spec.y - truth.horizon) <= HORIZON_YES
    return overlaid(image, horizon.render(spec, image.size)), horizon.QUESTION, "Yes" if yes else "No"


NEAR_MISS = (0.09, 0.16)  # how far from the horizon a near-miss line is (a fooled run is one over 0.1 away)


def near_miss_line(rng: np.random.Generator, truth: world.Reading) -> horizon.Spec:
    """A level-ish line just too far from the horizon to be on it (NEAR_MISS away, above or below, kept inside the
    picture). `horizon_line`'s No lines are uniform over the picture, so few fall between 0.1 and 0.16 away; run
    13's judge said P 0.95 to lines 0.13 from a snowy plain's horizon, and LoRAs stop there."""
    gap = float(rng.uniform(*NEAR_MISS))
    sides = [s for s in (-1, 1) if 0.05 <= truth.horizon + s * gap <= 0.95] or [1 if truth.horizon < 0.5 else -1]
    y = float(np.clip(truth.horizon + float(rng.choice(sides)) * gap, 0.05, 0.95))
    return horizon.Spec(round(y, 3), round(float(np.clip(truth.tilt + rng.uniform(-1.5, 1.5), -4, 4)), 1))


def near_miss_row(rng: np.random.Generator, image: Image.Image, truth: world.Reading) -> ROW:
    """Half the time a near miss (`near_miss_line`, answer No), else a line on the horizon (Yes), so that the
    rows teach where Yes ends rather than saying No more often."""
    make = line_on_horizon if rng.random() < 0.5 else near_miss_line
    return line_row(image, make(rng, truth), truth)


def palette_row(rng: np.random.Generator, image: Image.Image, truth: world.Reading, scene: world.Scene | None,
                dominant: list | None = None) -> ROW:
    """A palette to ask about: the scene's own, the image's dominant colours (`dominant`: read once before), or a
    preset's."""
    if rng.random() < 0.5 and scene is not None:
        colours = world.scene_palette(scene, int(rng.integers(4, 7)))
    elif rng.random() < 0.5:
        colours = dominant or world.dominant_colours(image, int(rng.integers(3, 6)))
    else:
        presets = palette.load_presets()
        colours = [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in presets[rng.choice(sorted(presets))]]
    spec = palette.Spec(tuple(tuple(int(v) for v in c) for c in colours))
    yes = world.palette_distance(image, colours) < world.PALETTE_MATCH
    return overlaid(image, palette.render(spec, image.size)), palette.QUESTION, "Yes" if yes else "No"


def line_weight_of(truth: world.Reading, size: int) -> int:
    """The toy world's line weight: a tree trunk's width, else the hairlines of birds and the horizon."""
    return max(1, round(0.028 * size)) if truth.tree else 1


def line_weight_row(rng: np.random.Generator, image: Image.Image, truth: world.Reading) -> ROW:
    own = line_weight_of(truth, image.size[0])
    px = own if rng.random() < 0.5 else int(rng.integers(1, 9))
    spec = line_weight.Spec(px)
    yes = abs(px - own) <= 1
    return overlaid(image, line_weight.render(spec, image.size)), line_weight.QUESTION, "Yes" if yes else "No"


def distance_of(point: tuple[float, float], truth: world.Reading) -> float:
    """How far from the camera a point of the image is: on the ground, nearer the bottom is closer; the sky is
    farthest."""
    x, y = point
    line = truth.horizon - np.tan(np.radians(truth.tilt)) * (x - 0.5)
    return 1e3 if y <= line + 0.02 else 1.0 / (y - line)


def depth_points(rng: np.random.Generator, truth: world.Reading) -> tuple[tuple[float, float], tuple[float, float]]:
    """Two points at clearly different depths; a horizon read near the bottom leaves almost no ground (a run once
    looped forever on one), so after 200 draws the points are the sky's top and the ground's last row."""
    for _ in range(200):
        a = (float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9)))
        b = (float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9)))
        da, db = distance_of(a, truth), distance_of(b, truth)
        if max(da, db) / min(da, db) > 1.5 and abs(a[0] - b[0]) > 0.08:
            return a, b
    return (0.3, 0.05), (0.7, 0.98)


def depth_row(rng: np.random.Generator, image: Image.Image, truth: world.Reading) -> ROW:
    a, b = depth_points(rng, truth)
    da, db = distance_of(a, truth), distance_of(b, truth)
    relation = str(rng.choice(list(depth.RELATIONS)))
    spec = depth.Spec(a, b, relation)
    (question, _), = depth.questions(spec)[:1]
    a_closer = da < db
    yes = {"foreground": a_closer, "closer": a_closer, "background": not a_closer, "further": not a_closer}[relation]
    return overlaid(image, depth.render(spec, image.size)), question, "Yes" if yes else "No"


VALUES = {"scene": list(world.SCENES), "time": list(world.TIMES)} | {k: list(v) for k, v in world.WORDS.items()}


def other_prompt(rng: np.random.Generator, attributes: dict[str, str]) -> str:
    """A prompt the image does not show, drawn like `short_of`'s (the same lengths): the image's short prompt with
    its scene swapped (half of them), one named word changed, or a thing named that the image lacks.

    The first negatives named every attribute and the positives a few, so the judge learnt "a long prompt is No" and
    said Yes to every scene for every image (P 0.97 that a beach shows a snowy plain): the guard's "lost its prompt"
    could not fire and Score's alignment could not tell a desert from a beach."""
    named = world.parse(short_of(rng, attributes))
    absent = [k for k in VALUES if k not in attributes and k != "placement"]
    how = "scene" if rng.random() < 0.5 else str(rng.choice(["change", "add"]))
    if how == "change" and len(named) > 1:
        key = str(rng.choice([k for k in named if k != "scene" and len(VALUES[k]) > 1] or ["scene"]))
    elif how == "add" and absent:
        key = str(rng.choice(absent))
    else:
        key = "scene"
    named[key] = str(rng.choice([v for v in VALUES[key] if v != attributes.get(key)]))
    return world.prompt_of(named)


def short_of(rng: np.random.Generator, attributes: dict[str, str]) -> str:
    """A prompt naming the scene and a few of the image's attributes."""
    kept = {"scene": attributes["scene"]} | {k: v for k, v in attributes.items() if k != "scene" and rng.random() < 0.4}
    return world.prompt_of(kept)


def alignment_rows(rng: np.random.Generator, image: Image.Image, truth: world.Reading) -> list[ROW]:
    attributes = truth.attributes()
    prompt = short_of(rng, attributes) if rng.random() < 0.5 else other_prompt(rng, attributes)
    yes = world.alignment(prompt, truth) == 1.0
    answer = "Yes" if yes else "No"
    pixels = from_pil(image)
    return [(pixels, prompt_question(prompt), answer), (pixels, judge.vqa_question(prompt), answer)]


def explain_aesthetic(parts: dict[str, float]) -> str:
    """One line naming the rule the image follows best and the one it breaks most (or a second one it follows)."""
    level = {k: (1 + v / 2 if k == "no texture" else v) for k, v in parts.items()}  # each 0..1
    ranked = sorted(level, key=level.get, reverse=True)
    best, worst = ranked[0], ranked[-1]
    first = RULE_WORDS[best][0]
    second = RULE_WORDS[worst][1] if level[worst] < 0.6 else f"and {RULE_WORDS[ranked[1]][0]}"
    return f"{first[0].upper()}{first[1:]}{';' if level[worst] < 0.6 else ''} {second}."


def explain_alignment(prompt: str, truth: world.Reading) -> str:
    named = world.parse(prompt)
    shown = [world.phrase(k, v) for k, v in named.items() if world.present(truth, k, v)]
    missing = [world.phrase(k, v) for k, v in named.items() if not world.present(truth, k, v)]
    if not missing:
        return f"It shows {', '.join(shown) or 'the request'}."
    if not shown:
        return f"It shows none of the request: not {', '.join(missing)}."
    return f"It shows {', '.join(shown)} but not {', '.join(missing)}."


def scene_row(rng: np.random.Generator, image: Image.Image, truth: world.Reading) -> ROW:
    """"Does this image show {scene}?" (or VQAScore's wording) for the image's own scene or another, half each."""
    yes = rng.random() < 0.5
    scene = truth.scene if yes else str(rng.choice([s for s in world.SCENES if s != truth.scene]))
    question = prompt_question(scene) if rng.random() < 0.5 else judge.vqa_question(scene)
    return from_pil(image), question, "Yes" if yes else "No"


def noisy(rng: np.random.Generator, value: float) -> int:
    return int(np.clip(round(value + rng.normal(0, 0.45)), 0, 5))


def rubric_values(parts: dict[str, float], truth: world.Reading, prompt: str) -> dict[str, float]:
    """The analytic score 0..5 each rubric follows, from the image's aesthetic parts and reading, for `prompt`."""
    aesthetic = float(np.clip(sum(parts.values()), 0, 5))
    aligned = 5 * world.alignment(prompt, truth)
    return {"aesthetic": aesthetic, "alignment": aligned, "preference": 0.5 * aesthetic + 0.5 * aligned}


def rubric_rows(rng: np.random.Generator, image: Image.Image, truth: world.Reading, prompt: str,
                parts: dict[str, float] | None = None) -> list[ROW]:
    parts = parts or world.aesthetic_parts(np.asarray(image))
    values = rubric_values(parts, truth, prompt)
    pixels = from_pil(image)
    scores = {"aesthetic": (noisy(rng, values["aesthetic"]), explain_aesthetic(parts)),
              "alignment": (noisy(rng, values["alignment"]), explain_alignment(prompt, truth)),
              "preference": (noisy(rng, values["preference"]),
                             f"{explain_alignment(prompt, truth)} {explain_aesthetic(parts)}")}
    return [(pixels, judge.rubric_prompt(r, prompt), f"Score: {s}\n{why}") for r, (s, why) in scores.items()]


def rewrite(rng: np.random.Generator, short: str) -> str:
    """A rich prompt for a short one, of mixed quality (what the rewriter is taught to sample)."""
    named = world.parse(short)
    words = [w for w in GOOD_WORDS + USELESS_WORDS if world.parse(w) and
             next(iter(world.parse(w))) not in named]
    rng.shuffle(words)
    extra, seen = [], set()
    for w in words[:int(rng.integers(2, 5))]:
        key = next(iter(world.parse(w)))
        if key not in seen:
            extra.append(w)
            seen.add(key)
    if rng.random() < 0.15:  # now and then a wrong word: another scene
        extra.insert(0, str(rng.choice([s for s in world.SCENES if s != named.get("scene")])).split(" ", 1)[1])
    time = f" at {named['time']}" if "time" in named else (f" at {rng.choice(list(world.TIMES))}"
                                                            if rng.random() < 0.6 else "")
    head = short.split(",")[0] + (time if " at " not in short.split(",")[0] else "")
    return ", ".join([head, *short.split(", ")[1:], *extra])


def describe_rows(image: Image.Image, truth: world.Reading) -> list[ROW]:
    """Image-to-prompt (the image's whole prompt) and PRIP's pivot step (the request word for word, then keywords)."""
    attributes = truth.attributes()
    request = attributes["scene"]
    keywords = [world.phrase(k, v) for k, v in attributes.items() if k != "scene"]
    pixels = from_pil(image)
    return [(pixels, refine.IMAGE_TO_PROMPT, world.prompt_of(attributes)),
            (pixels, refine.PIVOT_TO_PROMPT.format(prompt=request), ", ".join([request, *keywords]))]


def pair_rows(rng: np.random.Generator, left: tuple[Image.Image, world.Reading],
              right: tuple[Image.Image, world.Reading], prompt: str) -> list[ROW]:
    """The same-scene question (image-to-prompt's closeness) and the left-or-right comparison."""
    (a, ra), (b, rb) = left, right
    same = ra.scene == rb.scene and ra.time == rb.time and abs(ra.horizon - rb.horizon) < 0.12
    score = [0.5 * world.aesthetic(np.asarray(im)) + 2.5 * world.alignment(prompt, r) for im, r in (left, right)]
    pixels = from_pil(judge.side_by_side(a, b))
    return [(pixels, refine.SAME_CONTENT, "Yes" if same else "No"),
            (pixels, judge.COMPARE_QUESTION.format(prompt=prompt), "Yes" if score[0] > score[1] else "No")]


def prompt_to_score(rng: np.random.Generator, truth: world.Reading) -> str:
    """Half the time a prompt the image shows, else one it does not: a run that scored only the image's own prompts
    never learnt the alignment rubric (Spearman 0.14: every training answer was 5)."""
    attributes = truth.attributes()
    return short_of(rng, attributes) if rng.random() < 0.5 else other_prompt(rng, attributes)


def rows_for(rng: np.random.Generator, image: Image.Image, scene: world.Scene | None = None,
             prompt: str | None = None) -> list[ROW]:
    """Training rows of every image task for one image (its truth read from its pixels)."""
    truth = world.read(np.asarray(image))
    prompt = prompt or prompt_to_score(rng, truth)
    rows = [horizon_row(rng, image, truth), palette_row(rng, image, truth, scene), line_weight_row(rng, image, truth),
            depth_row(rng, image, truth), *alignment_rows(rng, image, truth),
            *rubric_rows(rng, image, truth, prompt), *describe_rows(image, truth)]
    return rows


def text_rows(rng: np.random.Generator, n: int) -> list[ROW]:
    """Rewriting rows: a short prompt of the grammar -> a rich one (no image)."""
    rows = []
    for _ in range(n):
        short, _ = world.sample_prompt(rng, rich=0.15)
        rows.append((None, refine.REWRITE.format(prompt=short), rewrite(rng, short)))
    return rows


def questions_corpus() -> list[str]:
    """Every fixed text of the app's questions and templates (for the VLM's tokenizer)."""
    texts = [horizon.QUESTION, palette.QUESTION, line_weight.QUESTION, refine.IMAGE_TO_PROMPT, refine.SAME_CONTENT,
             refine.REWRITE, refine.PIVOT_TO_PROMPT, judge.COMPARE_QUESTION, SUFFIX,
             *[judge.rubric_prompt(r, "{prompt}") for r in judge.RUBRICS]]
    texts += [q.format(p="Point A", q="Point B") for q in depth.RELATIONS.values()]
    texts += [f"{a} {b}" for a, b in RULE_WORDS.values()]
    return texts


# ---------- the model ------------------------------------------------------------------------------------------------

TEXT = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)
VISION = dict(depth=4, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=128,
              fullatt_block_indexes=[3])


def corpus(rng: np.random.Generator, n: int = 4000) -> list[str]:
    """What the VLM reads and writes: the app's questions and templates, prompts of the grammar, answers."""
    texts = questions_corpus() * 20
    for _ in range(n):
        prompt, scene = world.sample_prompt(rng, rich=float(rng.uniform(0.2, 1.0)))
        texts += [prompt, prompt_question(prompt), judge.vqa_question(prompt), f"Score: {int(rng.integers(6))}",
                  rewrite(rng, prompt.split(",")[0])]
    return texts + ["Yes", "No"] * 200


def vlm_tokenizer(rng: np.random.Generator, vocab_size: int = 1600):
    """A byte-level BPE over `corpus`, with Qwen's special tokens and chat template."""


    special = QWEN_SPECIAL_TOKENS[:1] + QWEN_SPECIAL_TOKENS[2:3] + QWEN_SPECIAL_TOKENS[1:2] + QWEN_SPECIAL_TOKENS[3:]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(rng), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=special[0], eos_token=special[1],
                                        model_max_length=32768)
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def build_vlm(seed: int = 0):
    """The toy world's VLM, untrained, in the app's adapter."""


    tokenizer = vlm_tokenizer(np.random.default_rng(seed))
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
    text = TEXT | dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.pad_token_id,
                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                       rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]})
    vision = VISION | dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112, in_chans=3)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return QwenVL(model.eval(), tokenizer, Qwen2VLImageProcessorPil(), "cpu")


def save_vlm(vlm, folder) -> None:
    """The folder layout the app's loader reads: model, tokenizer, image processor, chat_template.jinja."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vlm.model.save_pretrained(folder)
    vlm.tokenizer.save_pretrained(folder)
    vlm.image_processor.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(vlm.tokenizer.chat_template)


# ---------- training -------------------------------------------------------------------------------------------------


def image_rows(rng: np.random.Generator, pool: list[tuple[Image.Image, world.Scene | None]]) -> list[ROW]:
    """Every task's rows for every image of the pool, once (each image's random line, points and prompt drawn
    here), plus side-by-side pairs for three images in ten. Made before training so that a batch holds rows of
    many images: a first run drew its batches from one or two images at a time and hardly looked at the pictures
    (the same description for every image)."""
    rows: list[ROW] = []
    for image, scene in pool:
        rows += rows_for(rng, image, scene)
        if rng.random() < 0.3:
            other, _ = pool[int(rng.integers(len(pool)))]
            truth = world.read(np.asarray(image))
            rows += pair_rows(rng, (image, truth), (other, world.read(np.asarray(other))),
                              short_of(rng, truth.attributes()))
    return rows


TEXTURES = ("checks", "stripes", "bands", "blotches")


def textured(rng: np.random.Generator, image: Image.Image, kind: str | None = None) -> Image.Image:
    """The image under one of the textures our LoRAs paint when they fool the judge (EVALUATION.md's sheets): a
    checkered tiling, vertical stripes, horizontal bands, a grid of soft blotches; random cell size and strength.
    Its truths are read back from its pixels like any image's (the toy aesthetic loses up to 2 for texture)."""
    kind = kind or str(rng.choice(TEXTURES))
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w = pixels.shape[:2]
    rows, cols = np.mgrid[0:h, 0:w]
    cell, strength = int(rng.integers(3, 9)), float(rng.uniform(0.25, 0.6))
    if kind == "checks":
        pattern = ((rows // cell + cols // cell) % 2).astype(np.float32)
    elif kind == "stripes":
        pattern = ((cols // cell) % 2).astype(np.float32)
    elif kind == "bands":
        pattern = ((rows // cell) % 2).astype(np.float32)
    else:
        period = 2 * cell + 4
        pattern = (0.5 + 0.25 * (np.sin(2 * np.pi * rows / period) + np.sin(2 * np.pi * cols / period))).clip(0, 1)
    shaded = pixels * (1 - strength * pattern[..., None])
    return Image.fromarray(shaded.round().clip(0, 255).astype(np.uint8))


# pixels, (horizon, line, difference, aesthetic / 5), scene, time
AUX = tuple[torch.Tensor, tuple[float, ...], int, int]


def aux_items(rng: np.random.Generator, pool: list[tuple[Image.Image, world.Scene | None]]) -> list[AUX]:
    """For every image of the pool, the image under a horizon line with what the vision tower should see in it."""
    items = []
    for image, _ in pool:
        truth = world.read(np.asarray(image))
        spec = horizon_line(rng, truth)
        items.append((overlaid(image, horizon.render(spec, image.size)),
                      (truth.horizon, spec.y, truth.horizon - spec.y, world.aesthetic(np.asarray(image)) / 5),
                      list(world.SCENES).index(truth.scene), list(world.TIMES).index(truth.time)))
    return items


# pixels under the depth overlay, (A's x, A's y, B's x, B's y, 1 if A is closer else 0)
DEPTH_AUX = tuple[torch.Tensor, tuple[float, ...]]


def depth_aux_items(rng: np.random.Generator, items: list[Seen]) -> list[DEPTH_AUX]:
    """For every image of the pool, the image under two labelled points with where each is and which is closer:
    what the vision tower must see to answer the depth question (at chance in runs 1-13 without it)."""
    out = []
    for item in items:
        a, b = depth_points(rng, item.truth)
        closer = float(distance_of(a, item.truth) < distance_of(b, item.truth))
        out.append((overlaid(item.image, depth.render(depth.Spec(a, b), item.image.size)), (*a, *b, closer)))
    return out


class Probes(torch.nn.Module):
    """Linear heads on the vision tower's features, used only while training: the horizon, the line and their
    difference, the toy aesthetic, the scene and the time (the old world's judge sat at chance on the horizon without
    them). Here they learn (loss 0.04) but alone left the horizon answer at 0.47; a `focus` on the controls' rows
    raised it to 0.63 (assets/toy-world/README.md). The heads are dropped afterwards."""

    def __init__(self, width: int):
        super().__init__()
        self.heights = torch.nn.Linear(width, 4)
        self.classes = torch.nn.Linear(width, len(world.SCENES) + len(world.TIMES))
        self.points = torch.nn.Linear(width, 5)

    def loss(self, vlm, items: list[AUX]) -> torch.Tensor:
        features = vision_features(vlm, [pixels for pixels, *_ in items])
        heights = torch.tensor([h for _, h, _, _ in items], dtype=torch.float32)
        logits = self.classes(features)
        n = len(world.SCENES)
        return (20 * torch.nn.functional.mse_loss(self.heights(features), heights)
                + 0.3 * torch.nn.functional.cross_entropy(logits[:, :n], torch.tensor([s for *_, s, _ in items]))
                + 0.3 * torch.nn.functional.cross_entropy(logits[:, n:], torch.tensor([t for *_, t in items])))

    def depth_loss(self, vlm, items: list[DEPTH_AUX]) -> torch.Tensor:
        """Where Point A and Point B are (so the labels are read, not only the dots) and which is closer."""
        out = self.points(vision_features(vlm, [pixels for pixels, _ in items]))
        target = torch.tensor([t for _, t in items], dtype=torch.float32)
        return (20 * torch.nn.functional.mse_loss(out[:, :4], target[:, :4])
                + 0.3 * torch.nn.functional.binary_cross_entropy_with_logits(out[:, 4], target[:, 4]))


def vision_features(vlm, images: list[torch.Tensor]) -> torch.Tensor:
    """(len(images), features) from the vision tower, every image of the world's size flattened."""
    inputs = [vlm.pixel_inputs(pixels) for pixels in images]
    out = vlm.model.model.visual(torch.cat([i["pixel_values"] for i in inputs]),
                                 grid_thw=torch.cat([i["image_grid_thw"] for i in inputs]))
    return getattr(out, "last_hidden_state", out).reshape(len(images), -1)


@dataclasses.dataclass(frozen=True)
class Seen:
    """An image of the pool read once (its truth and aesthetic), so that new questions about it cost little."""

    image: Image.Image
    scene: world.Scene | None
    truth: world.Reading
    parts: dict[str, float]
    dominant: list  # 4 dominant colours


def seen(pool: list[tuple[Image.Image, world.Scene | None]]) -> list[Seen]:
    return [Seen(image, scene, world.read(np.asarray(image)), world.aesthetic_parts(np.asarray(image)),
                 world.dominant_colours(image, 4)) for image, scene in pool]


# Shares of the fresh rows by task (`--fresh`): the first continuation drew horizon 0.3, depth 0.3, line weight 0.1,
# rubric 0.3 (horizon 0.63 -> 0.92; depth stayed at chance).
FRESH = {"horizon": 0.3, "depth": 0.3, "line weight": 0.1, "rubric": 0.3}
FRESH_TASKS = ("horizon", "near miss", "depth", "line weight", "palette", "rubric", "describe", "alignment", "scene")


def fresh_rows(rng: np.random.Generator, items: list[Seen], n: int, shares: dict[str, float] | None = None
               ) -> list[ROW]:
    """`n` rows drawn anew on random images of the pool: a new line, two new points, a new stroke, a new prompt to
    score with new noise. Cached rows gave each image one line and one pair of points, and the judge learnt those
    2 000 answers rather than the horizon (training loss 0.27, held-out horizon 0.63)."""
    shares = shares or FRESH
    rows = []
    kinds = rng.choice(list(shares), size=n, p=np.array(list(shares.values())) / sum(shares.values()))
    for kind, i in zip(kinds, rng.integers(len(items), size=n), strict=True):
        item = items[i]
        if kind == "rubric":
            prompt = prompt_to_score(rng, item.truth)
            rows.append(rubric_rows(rng, item.image, item.truth, prompt, item.parts)[int(rng.integers(3))])
        elif kind == "palette":
            rows.append(palette_row(rng, item.image, item.truth, item.scene, item.dominant))
        elif kind == "alignment":  # the prompt's own question or VQAScore's, on a prompt shown or not
            rows.append(alignment_rows(rng, item.image, item.truth)[int(rng.integers(2))])
        elif kind == "scene":  # the alignment question about the scene alone, its own or another: the first step
            rows.append(scene_row(rng, item.image, item.truth))
        elif kind == "describe":  # image -> prompt, or PRIP's pivot -> keywords
            rows.append(describe_rows(item.image, item.truth)[int(rng.integers(2))])
        else:
            make = {"horizon": horizon_row, "near miss": near_miss_row, "depth": depth_row,
                    "line weight": line_weight_row}[kind]
            rows.append(make(rng, item.image, item.truth))
    return rows


SCORE_SD = 0.5  # the spread of the soft digit target around the analytic score (a real judge is not exact either)


def score_loss(vlm, rng: np.random.Generator, items: list[Seen], n: int, paired: bool = False) -> torch.Tensor:
    """Cross-entropy of the digit after "Score:" against a soft target centred on the analytic score, for `n`
    random (image, rubric, prompt), read where the app reads it (`judge.continuous_scores`). In a written verdict the
    digit is one token of about twenty, and runs 5-11 learnt the explanation while the digit stayed the same for
    every image (score sd 0.05 over held-out images, Spearman at chance).

    `paired`: half the digits come in pairs, one image and a rubric that reads the prompt (alignment, preference)
    scored for a prompt the image shows and for one it does not (`other_prompt`), so that only the prompt tells the
    two targets apart. Drawn independently, the alignment digit of runs 13-16 learnt the image alone: about 3 for a
    beach whether asked about "a beach" or "a snowy plain"."""
    pairs = n // 4 if paired else 0
    reads_prompt = [r for r in judge.RUBRICS if "{prompt}" in judge.RUBRICS[r]]
    both = [(items[i], str(rng.choice(reads_prompt))) for i in rng.integers(len(items), size=pairs)]
    alone = [(items[i], str(rng.choice(list(judge.RUBRICS)))) for i in rng.integers(len(items), size=n - 2 * pairs)]
    chosen = [pick for pick in both for _ in range(2)] + alone
    prompts = [prompt for item, _ in both for prompt in (short_of(rng, item.truth.attributes()),
                                                         other_prompt(rng, item.truth.attributes()))]
    prompts += [prompt_to_score(rng, item.truth) for item, _ in alone]
    prefix, ids = judge.score_prefix(vlm), judge.digit_ids(vlm)
    logits = vlm.next_token_logits([(from_pil(item.image), judge.rubric_prompt(rubric, prompt), prefix)
                                    for (item, rubric), prompt in zip(chosen, prompts, strict=True)])[:, ids]
    values = torch.tensor([rubric_values(item.parts, item.truth, prompt)[rubric]
                           for (item, rubric), prompt in zip(chosen, prompts, strict=True)])
    return torch.nn.functional.cross_entropy(logits, digit_target(values).to(logits.device))


def digit_target(values: torch.Tensor) -> torch.Tensor:
    """(n,) scores in 0..5 -> (n, 6) probabilities of the digits 0-5, a Gaussian of sd SCORE_SD around each score:
    its most likely digit is the rounded score and its expected digit (what `judge.continuous_scores` shows) is the
    score itself, pulled a little inwards near 0 and 5."""
    return torch.softmax(-((torch.arange(6.0) - values[:, None]) ** 2) / (2 * SCORE_SD ** 2), dim=-1)


def train(vlm, rows: list[ROW], seconds: float, seed: int = 0, batch: int = 12, aux: list[AUX] | None = None,
          focus: float = 0.0, items: list[Seen] | None = None, shares: dict[str, float] | None = None,
          scores: int = 0, depth_aux: list[DEPTH_AUX] | None = None, paired: bool = False) -> dict:
    """Answer cross-entropy (the answer and the end of the turn, so written texts stop) of every task's rows through
    the app's own adapter (`VLM.nll_rows`), under a budget; one text-only batch (rewriting) for every three image
    batches, each image batch `batch` rows drawn from all of `rows` (a `focus` share of them `fresh_rows` on
    `items`), plus `Probes` on 16 of `aux` (and 16 of `depth_aux`) and `score_loss` on `scores` rubric digits of
    `items` (`paired`: in pairs that differ only by the prompt)."""


    model, end = vlm.model, vlm.tokenizer.eos_token
    model.train().requires_grad_(True)
    probes = None
    if aux:
        with torch.no_grad():
            probes = Probes(vision_features(vlm, [aux[0][0]]).shape[1])
    params = [p for p in model.parameters() if p.requires_grad] + (list(probes.parameters()) if probes else [])
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    clock, step, rng = Clock(seconds), 0, np.random.default_rng(seed)
    losses: dict[str, list[float]] = {"image": [], "text": [], "probes": [], "scores": []}
    k = round(batch * focus) if items else 0
    start = time.perf_counter()
    while not clock.done:
        kind = "text" if step % 4 == 3 else "image"
        chosen = text_rows(rng, batch) if kind == "text" else (
            [rows[i] for i in rng.integers(len(rows), size=batch - k)] + fresh_rows(rng, items, k, shares))
        loss = vlm.nll_rows([(pixels, question, answer + end) for pixels, question, answer in chosen]).mean()
        losses[kind].append(loss.item())
        if probes is not None and kind == "image":
            probe = probes.loss(vlm, [aux[i] for i in rng.integers(len(aux), size=16)])
            if depth_aux:
                probe = probe + probes.depth_loss(vlm, [depth_aux[i] for i in rng.integers(len(depth_aux), size=16)])
            losses["probes"].append(probe.item())
            loss = loss + probe
        if scores and items and kind == "image":
            digits = score_loss(vlm, rng, items, scores, paired)
            losses["scores"].append(digits.item())
            loss = loss + digits
        step_with(optimizer, loss, params, clock.lr(2e-3, step, 100))
        step += 1
        if step % 50 == 0:
            print(f"  vlm step {step}  image {np.mean(losses['image'][-40:]):.3f}  text "
                  f"{np.mean(losses['text'][-12:] or [0]):.3f}  probes {np.mean(losses['probes'][-40:] or [0]):.3f}"
                  f"  scores {np.mean(losses['scores'][-40:] or [0]):.3f}"
                  f"  {time.perf_counter() - start:.0f}s", flush=True)
    model.eval().requires_grad_(False)
    return {"steps": step, "seconds": round(clock.elapsed, 1), "rows": len(rows),
            "final_image_nll": round(float(np.mean(losses["image"][-40:])), 4),
            "final_text_nll": round(float(np.mean(losses["text"][-12:] or [0])), 4),
            "final_probe_loss": round(float(np.mean(losses["probes"][-40:] or [0])), 4),
            "final_score_loss": round(float(np.mean(losses["scores"][-40:] or [0])), 4)}


# ---------- gates ----------------------------------------------------------------------------------------------------


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation with tied values sharing their mean rank: half the alignment truths are a tied 5.0, and
    ranking ties by position (runs 1-12) read a judge that parts them perfectly as about 0.2."""
    return float(scipy.stats.spearmanr(a, b).statistic)


@torch.no_grad()
def gates(vlm, held: list[tuple[Image.Image, world.Scene | None]], seed: int) -> dict:
    """The judge on held-out images (of scenes and seeds no training row used): each question's accuracy (P(Yes) >
    0.5 against the analytic label), each rubric's Spearman against the analytic measure, explanations in words,
    rewrites and descriptions that parse as the grammar."""
    rng = np.random.default_rng(seed)
    right: dict[str, list[bool]] = {}
    for image, scene in held:
        kinds = ("horizon", "palette", "line weight", "depth", "alignment", "VQAScore")  # rows_for's Yes/No rows
        for kind, (pixels, question, answer) in zip(kinds, rows_for(rng, image, scene), strict=False):
            p_yes = float(torch.exp(-vlm.nll_rows([(pixels, question, "Yes")])[0]))
            right.setdefault(kind, []).append((p_yes > 0.5) == (answer == "Yes"))
    near = np.random.default_rng(seed + 1)  # its own draws, so the other gates stay comparable with earlier runs
    for image, _ in held:
        pixels, question, answer = near_miss_row(near, image, world.read(np.asarray(image)))
        p_yes = float(torch.exp(-vlm.nll_rows([(pixels, question, "Yes")])[0]))
        right.setdefault("horizon near miss", []).append((p_yes > 0.5) == (answer == "Yes"))
    accuracy = {k: round(float(np.mean(v)), 3) for k, v in right.items()}
    accuracy["scene told apart"] = scenes_told_apart(vlm, [image for image, _ in held], rng)
    items, truth = [], {r: [] for r in judge.RUBRICS}
    for image, _ in held:
        reading = world.read(np.asarray(image))
        prompt = short_of(rng, reading.attributes()) if rng.random() < 0.5 else other_prompt(rng, reading.attributes())
        aesthetic, aligned = world.aesthetic(np.asarray(image)), 5 * world.alignment(prompt, reading)
        for rubric, value in (("aesthetic", aesthetic), ("alignment", aligned),
                              ("preference", 0.5 * aesthetic + 0.5 * aligned)):
            items.append((image, rubric, prompt))
            truth[rubric].append(value)
    verdicts = judge.continuous_scores(vlm, items)
    scores = {r: [v.score for v in verdicts if v.rubric == r] for r in judge.RUBRICS}
    rubric_spearman = {r: round(spearman(scores[r], truth[r]), 3) for r in judge.RUBRICS}
    image, _ = held[0]
    written = judge.sampled_score(vlm, image, "aesthetic", samples=3, seed=seed)
    rewrites = vlm.generate_text(refine.REWRITE.format(prompt="a beach"), max_new_tokens=60, temperature=0.9,
                                 top_p=0.9, num_return_sequences=8, seed=seed)
    described = [vlm.generate_text(refine.IMAGE_TO_PROMPT, image=im, max_new_tokens=60)[0] for im, _ in held[:32]]
    agreement = [np.mean([world.present(world.read(np.asarray(im)), k, v) for k, v in world.parse(d).items()])
                 if world.parse(d) else 0.0 for d, (im, _) in zip(described, held[:32], strict=True)]
    return {"question_accuracy": accuracy, "rubric_spearman": rubric_spearman,
            "sampled_explanation": written.explanation, "sampled_score": written.score,
            "rewrites_of_a_beach": rewrites, "rewrites_parsed": round(float(np.mean(
                [world.parse(r).get("scene") == "a beach" for r in rewrites])), 3),
            "described": described[:4], "described_attribute_agreement": round(float(np.mean(agreement)), 3),
            "scene_matrix": scene_matrix(vlm)}


@torch.no_grad()
def scene_matrix(vlm, time: str = "noon") -> dict[str, dict[str, float]]:
    """P(Yes) to "Does this image show {asked} at {time}?" for each scene rendered at `time` (horizon 0.5):
    {asked: {shown: P}}. A judge that reads the prompt is high on the diagonal only."""
    p_yes = {}  # shown -> P(Yes) for every asked scene, one batch per picture
    for name in world.SCENES:
        pixels = from_pil(world.render(world.Scene(name, time, 0.5)))
        nll = vlm.nll_rows([(pixels, prompt_question(f"{asked} at {time}"), "Yes") for asked in world.SCENES])
        p_yes[name] = [round(float(torch.exp(-x)), 2) for x in nll]
    return {asked: {name: p_yes[name][i] for name in world.SCENES} for i, asked in enumerate(world.SCENES)}


@torch.no_grad()
def scenes_told_apart(vlm, images: list[Image.Image], rng: np.random.Generator) -> float:
    """How often the judge's P(Yes) to "Does this image show {scene}?" is higher for the image's own scene (as read
    from its pixels) than for another scene drawn at random: 0.5 is a judge that does not read the prompt."""
    right = []
    for image in images:
        own = world.read(np.asarray(image)).scene
        other = str(rng.choice([s for s in world.SCENES if s != own]))
        pixels = from_pil(image)
        nll = vlm.nll_rows([(pixels, prompt_question(s), "Yes") for s in (own, other)])
        right.append(bool(nll[0] < nll[1]))
    return round(float(np.mean(right)), 3)


# ---------- hardening: images from LoRAs trained against the judge, labelled by the truth -------------------------


def fooling_round(vlm, generator, loras: int, seed: int, steps: int = 40) -> tuple[float, list[Image.Image]]:
    """Train `loras` horizon LoRAs against the judge as it is, with the paper's method alone (no steering: the hacks
    to harden against), and judge their unseen seeds: the share of images the judge passes (P > 0.9) with the
    horizon more than 0.1 from the line (fooled), and the images themselves."""

    rng = np.random.default_rng(seed)
    fooled, images = [], []
    for k in range(loras):
        line = round(float(rng.uniform(0.2, 0.8)), 3)
        spec = horizon.Spec(line)
        overlay = np.asarray(horizon.render(spec, (world.SIZE, world.SIZE)))
        prompt = str(rng.choice(list(world.SCENES)))
        result = optimize(generator, vlm, prompt, horizon.questions(spec), overlay=overlay, steps=steps,
                          seed=seed + k, eval_seeds=4, progress=False, views=0, noises=1, keep=0.0)
        for image, p in zip(result.unseen.images_lora, result.unseen.p_lora, strict=True):
            fooled.append(p > 0.9 and abs(world.read(np.asarray(image)).horizon - line) > 0.1)
            images.append(image)
    return float(np.mean(fooled)), images


if __name__ == "__main__":  # the command lives in pipelines/commands/world_vlm_training.py
    from .commands.world_vlm_training import main

    sys.exit(main())
