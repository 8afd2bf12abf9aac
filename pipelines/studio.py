"""Glue between the Gradio app (app.py) and the engine: input checks, question lists, overlays built from
UI parameters or a drawn canvas, and the streamed optimisation run.

Pure Python, no gradio import: every function here is testable without a browser or a server. Bad user
input raises ValueError naming the value; the app turns exactly that into a message (gr.Error).

    python -m pipelines.studio make-examples --preset tiny   # precompute the app's examples
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import queue
import re
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

import overlays
from overlays import canvas, colors, composition, depth, horizon, line_weight, palette
from overlays.colors import to_hex

from . import lora
from .cli import check_text
from .generator import Conditioning, Generator
from .optimize import Evaluation, Result, Step, normalise_answer, optimize, save_result, score_image, with_yes_no
from .presets import Preset
from .vlm import QA, VLM, from_pil

MAX_SEED = 2**31 - 1
MAX_STEPS = 500
MAX_QUESTIONS = 8
MAX_QUESTION_CHARS = 500
MAX_SCALE = 5.0  # the app's LoRA-scale slider; the engine allows up to lora.MAX_SCALE
DISPLAY = 512  # side of the canvas and of the displayed images, whatever the preset's resolution
CONTROL_NAMES: tuple[str, ...] = tuple(overlays.CONTROLS)
DRAWN = {  # controls read from the canvas, and what the user should draw for each
    horizon.NAME: "the horizon as a line across the image",
    line_weight.NAME: "a stroke as thick as the lines you want",
    depth.NAME: "two dots (the left one is Point A)",
    composition.NAME: "red annotations (lines, regions, words)",
}
COMPOSITION_QUESTION = "Does the image follow the layout sketched in red?"
RUN_THREAD_PREFIX = "studio-optimise-"
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples" / "cached"


# ---------- input checks ----------------------------------------------------------------------------


def check_prompt(prompt: object) -> str:
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError(f"the prompt {prompt!r} is not text")
    return check_text(prompt or "", "prompt")


def check_int(value: object, what: str, lo: int, hi: int) -> int:
    """A whole number in [lo, hi]; integral floats (what gr.Number sends) are accepted."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or float(value) != int(value) or not lo <= int(value) <= hi:
        raise ValueError(f"{what} {value!r} must be a whole number from {lo} to {hi}")
    return int(value)


def check_real(value: object, what: str, lo: float, hi: float) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not lo <= float(value) <= hi:
        raise ValueError(f"{what} {value!r} must be a number from {lo:g} to {hi:g}")
    return float(value)


def check_seed(seed: object) -> int:
    return check_int(seed, "seed", 0, MAX_SEED)


def check_steps(steps: object, max_steps: int = MAX_STEPS) -> int:
    return check_int(steps, "steps", 1, max_steps)


def check_scale(scale: object) -> float:
    return check_real(scale, "LoRA scale", 0.0, MAX_SCALE)


# ---------- questions ----------------------------------------------------------------------------


def _needs_yes_no(answer: str) -> bool:
    return answer.strip().lower() in ("yes", "no")


def parse_questions(text: str | None, default_answer: str = "Yes") -> list[QA]:
    """One pair per line, "question | expected answer" (answer defaults to Yes); blank and # lines skipped.

    Questions expecting Yes or No get "Answer with Yes or No." appended, as in training.
    """
    pairs: list[QA] = []
    for n, raw in enumerate((text or "").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        question, _, answer = line.rpartition("|") if "|" in line else (line, "", default_answer)
        question, answer = question.strip(), answer.strip()
        if not question:
            raise ValueError(f"line {n} {line!r}: the question is empty")
        if not answer:
            raise ValueError(f"line {n} {line!r}: the expected answer after '|' is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise ValueError(f"line {n}: the question has {len(question)} characters; at most {MAX_QUESTION_CHARS}")
        answer = normalise_answer(answer)  # "yes" -> "Yes": the token the question asks for
        pairs.append((with_yes_no(question) if _needs_yes_no(answer) else question, answer))
    if not pairs:
        raise ValueError("there are no questions: write one per line, as 'question | expected answer'")
    if len(pairs) > MAX_QUESTIONS:
        raise ValueError(f"{len(pairs)} questions given; at most {MAX_QUESTIONS}")
    return pairs


def format_questions(pairs: Sequence[QA]) -> str:
    return "\n".join(f"{q} | {a}" for q, a in pairs)


DRAFT_INSTRUCTION = (
    "Write {n} short yes/no questions that check whether a picture matches this description: \"{prompt}\". "
    "A faithful picture must get the answer Yes to every question. "
    "Write one question per line and nothing else."
)
_LEAD = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d+[.):]|q(?:uestion)?\s*\d*\s*[:.)])\s*", re.IGNORECASE)


def parse_drafted(text: str, n: int) -> list[str]:
    """Questions from a VLM's reply: one per line, list markers and quotes stripped, up to the first '?',
    at least three words, no duplicates, at most n."""
    out: list[str] = []
    seen: set[str] = set()
    for raw in text.splitlines():
        line = _LEAD.sub("", raw).strip().strip("\"'`\u201c\u201d ")
        if "?" not in line:
            continue
        question = line[: line.index("?") + 1].strip()
        if len(re.findall(r"[^\W\d_]+", question)) < 3:
            continue
        question = question[0].upper() + question[1:]
        if question.lower() in seen:
            continue
        seen.add(question.lower())
        out.append(question)
        if len(out) == n:
            break
    return out


def template_questions(prompt: str, n: int) -> list[str]:
    """Generic starting points when the VLM's reply holds no usable question."""
    subject = prompt.strip().rstrip(".!?")
    templates = [
        f"Does the image show {subject}?",
        f"Is every part of the description \"{subject}\" visible in the image?",
        "Is the main subject clearly recognisable?",
        "Is the image free of distorted or malformed objects?",
        "Is the scene physically plausible?",
        "Are the colours and lighting consistent across the image?",
        "Is the image sharp and free of artifacts?",
        "Does the composition look balanced?",
    ]
    return templates[:n]


def draft_questions(vlm: VLM, prompt: str, n: int = 4, max_new_tokens: int | None = None) -> tuple[list[str], str]:
    """Ask the loaded VLM for n yes/no questions about the prompt (greedy, no external API).

    Returns (questions, note). If the reply holds no usable question (e.g. random weights), the note says
    so, quotes the reply, and generic template questions are returned for the user to edit.
    """
    prompt = check_prompt(prompt)
    n = check_int(n, "number of questions", 1, MAX_QUESTIONS)
    reply = vlm.generate_text(DRAFT_INSTRUCTION.format(n=n, prompt=prompt),
                              max_new_tokens=max_new_tokens or min(48 * n, 384))[0]
    drafted = parse_drafted(reply, n)
    if drafted:
        return drafted, f"{len(drafted)} question(s) drafted by the VLM; edit them as you like."
    shown = " ".join(reply.split())[:160]
    return template_questions(prompt, n), (
        f"The VLM's reply held no usable question (it said: {shown!r}); these are generic templates to edit.")


# ---------- controls: parameters -> overlay --------------------------------------------------------


@dataclass
class Control:
    name: str
    spec: object
    overlay: Image.Image  # RGBA at the generator's resolution: exactly what the VLM sees on top
    questions: list[QA]
    description: str
    notes: list[str] = field(default_factory=list)


def parse_colors(text: str | None) -> list[str]:
    """Colours from free text (see overlays.colors.parse_colors), as "#rrggbb"."""
    return [to_hex(c) for c in colors.parse_colors(text)]


def max_line_px(resolution: int) -> int:
    return max(1, int(line_weight.max_px(resolution)))


def _drawn(drawing: object) -> bool:
    return drawing is not None and not canvas.is_blank(drawing)


def _resized_layer(image: Image.Image | np.ndarray, size: tuple[int, int]) -> Image.Image:
    image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    image = image.convert("RGBA")
    return image if image.size == size else image.resize(size, Image.LANCZOS)


def build_control(name: str, resolution: int, *, drawing: object = None, palette_colors: str | None = None,
                  horizon_y: float | None = None, horizon_tilt: float = 0.0, line_px: int = 4,
                  point_a: Sequence[float] | None = None, point_b: Sequence[float] | None = None,
                  depth_relation: str = "foreground", depth_contrast: bool = False,
                  composition_reference: Image.Image | np.ndarray | None = None,
                  composition_mode: str = "transparent", composition_questions: Sequence[str] = ()) -> Control:
    """The overlay (at the generator's resolution), its default questions and a description.

    Drawn controls read `drawing` (an ImageEditor value, a layer list or an RGBA array, at any size) when
    something is painted on it: horizon -> the fitted line, depth -> the two dots (left one = Point A),
    composition -> the annotations, on top of `composition_reference` if one is given. Without a drawing,
    horizon and depth take explicit numbers (horizon_y/horizon_tilt, point_a/point_b) if given; else the
    canvas is blank and that is an error. Line weight measures a drawn stroke, else takes `line_px`;
    palette takes its own inputs.
    """
    size = (resolution, resolution)
    notes: list[str] = []
    if name == palette.NAME:
        spec = palette.Spec(tuple(parse_colors(palette_colors)))
    elif name == horizon.NAME:
        if _drawn(drawing):
            horizon_y, horizon_tilt = params_from_canvas(name, drawing, resolution).values()
        elif horizon_y is None:
            raise ValueError(f"the canvas is blank: draw {DRAWN[name]} first")
        spec = horizon.Spec(horizon_y, horizon_tilt)  # the Spec checks height and tilt
    elif name == line_weight.NAME:
        if _drawn(drawing):  # a drawn stroke wins over the slider
            line_px = params_from_canvas(name, drawing, resolution)["line_px"]
            notes.append(f"line weight measured from your stroke: {line_px} px at {resolution} px")
        spec = line_weight.Spec(check_int(line_px, "line weight (px)", 1, max_line_px(resolution)))
    elif name == depth.NAME:
        if _drawn(drawing):
            point_a, point_b = params_from_canvas(name, drawing, resolution).values()
        elif point_a is None or point_b is None:
            raise ValueError(f"the canvas is blank: draw {DRAWN[name]} first")
        spec = depth.Spec(point_a, point_b, depth_relation, bool(depth_contrast))  # the Spec checks the points
    elif name == composition.NAME:
        layers = []
        if composition_reference is not None:
            ref = _resized_layer(composition_reference, size)
            w, h = (composition_reference.size if isinstance(composition_reference, Image.Image)
                    else np.asarray(composition_reference).shape[1::-1])
            if (w, h) != size:
                notes.append(f"reference {w}x{h} scaled to the generator's {resolution}x{resolution}")
            layers.append(np.asarray(ref))
        if _drawn(drawing):
            layers.append(np.asarray(_resized_layer(canvas.as_layer(drawing), size)))
        if not layers or canvas.is_blank(layers):
            raise ValueError(f"the canvas is blank: draw {DRAWN[name]} on it, or upload a reference image")
        reference = Image.fromarray(canvas.merge_layers(layers), "RGBA")
        questions = [q for q in composition_questions if q.strip()] or [COMPOSITION_QUESTION]
        spec = composition.Spec(reference, tuple(questions), composition_mode)
    else:
        raise ValueError(f"control {name!r} is not one of {', '.join(CONTROL_NAMES)}")
    module = overlays.CONTROLS[name]
    return Control(name, spec, module.render(spec, size), module.questions(spec), module.describe(spec), notes)


def default_questions(name: str, depth_relation: str = "foreground", depth_contrast: bool = False) -> str:
    """The questions box's text for a control (composition: a starting question to edit)."""
    if name == composition.NAME:
        return f"{with_yes_no(COMPOSITION_QUESTION)} | Yes"
    if name == depth.NAME:
        spec = depth.Spec((0.25, 0.5), (0.75, 0.5), depth_relation, bool(depth_contrast))
        return format_questions(depth.questions(spec))
    if name not in overlays.CONTROLS:
        raise ValueError(f"control {name!r} is not one of {', '.join(CONTROL_NAMES)}")
    return format_questions([(overlays.CONTROLS[name].QUESTION, "Yes")])


# ---------- the canvas ----------------------------------------------------------------------------


def params_from_canvas(name: str, value: object, resolution: int) -> dict[str, object]:
    """Parameters of a drawn control from what was painted (ImageEditor value, layer list or array).

    horizon -> horizon_y, horizon_tilt; line-weight -> line_px (scaled from the canvas to the generator's
    resolution); depth -> point_a, point_b (left to right); composition -> composition_reference (RGBA).
    """
    if name not in DRAWN:
        if name in overlays.CONTROLS:
            raise ValueError(f"the {name} control is set with its own inputs, not drawn on the canvas")
        raise ValueError(f"control {name!r} is not one of {', '.join(CONTROL_NAMES)}")
    if canvas.is_blank(value):
        raise ValueError(f"the canvas is blank: draw {DRAWN[name]} first")
    layer = canvas.as_layer(value)
    if name == horizon.NAME:
        y, tilt = canvas.horizon_from_layer(layer)
        return {"horizon_y": round(y, 3), "horizon_tilt": round(tilt, 1)}
    if name == line_weight.NAME:
        px = canvas.stroke_thickness(layer) * resolution / layer.shape[1]
        return {"line_px": int(min(max(1, round(px)), max_line_px(resolution)))}
    if name == depth.NAME:
        a, b = canvas.points_from_layer(layer, 2)
        return {"point_a": (round(a[0], 3), round(a[1], 3)), "point_b": (round(b[0], 3), round(b[1], 3))}
    return {"composition_reference": Image.fromarray(layer, "RGBA")}


def editor_value(base: Image.Image | None, size: int = DISPLAY) -> dict[str, object]:
    """A fresh ImageEditor value: the base image scaled to the canvas, nothing drawn."""
    return {"background": None if base is None else for_display(base.convert("RGB"), size), "layers": [],
            "composite": None}


def checkerboard(resolution: int) -> Image.Image:
    """A neutral checkerboard standing in for the base image before one is generated."""
    cells = (np.indices((resolution, resolution)) // max(1, resolution // 8)).sum(0) % 2
    grey = np.where(cells[..., None] == 1, 200, 170).astype(np.uint8)
    return Image.fromarray(np.repeat(grey, 3, axis=2), "RGB")


def overlaid(base: Image.Image | None, overlay: Image.Image | None, resolution: int) -> Image.Image:
    """The base image with the overlay on top, as the VLM sees it (same formula as overlays.composite)."""
    base = checkerboard(resolution) if base is None else base.convert("RGB")
    if base.size != (resolution, resolution):
        base = base.resize((resolution, resolution), Image.LANCZOS)
    if overlay is None:
        return base
    pixels = overlays.composite(from_pil(base)[0], overlay)
    return Image.fromarray((pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy(), "RGB")


def for_display(image: Image.Image | None, size: int = DISPLAY) -> Image.Image | None:
    """Small generator outputs (112 px on `tiny`) upscaled with hard pixel edges so they stay honest."""
    if image is None or image.size == (size, size):
        return image
    method = Image.NEAREST if image.size[0] < size else Image.LANCZOS
    return image.convert("RGB").resize((size, size), method)


def history_frame(history: Sequence[Step]):
    """Loss and P(expected answers) by step as a pandas DataFrame (pandas comes with gradio)."""
    import pandas as pd

    return pd.DataFrame({"step": [s.step for s in history], "loss": [s.loss for s in history],
                         "p_yes": [s.p_yes for s in history]})


# ---------- scoring and the streamed run -----------------------------------------------------------


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def optimise_stream(generator: Generator, vlm: VLM, cond: Conditioning, qa_pairs: Sequence[QA], *,
                    lock: threading.Lock, join_timeout: float = 600.0, **kwargs) -> Iterator[Step | Result]:
    """Run `optimize` in a worker thread and yield every Step, then the Result.

    The worker holds `lock` (the shared models) for the whole run. Closing this generator (a UI's Stop,
    a cancelled request) sets the stop event in `finally`: the worker stops before its next step, the
    engine removes the LoRA, and this waits for that. An exception in the worker is re-raised here.
    """
    stop = threading.Event()
    events: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            with lock:
                result = optimize(generator, vlm, cond, list(qa_pairs), callback=events.put, should_stop=stop.is_set,
                                  progress=False, **kwargs)
            events.put(result)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            events.put(_Failure(exc))

    worker = threading.Thread(target=work, name=RUN_THREAD_PREFIX + uuid.uuid4().hex[:8], daemon=True)
    worker.start()
    try:
        while True:
            item = events.get()
            if isinstance(item, _Failure):
                raise item.exc
            yield item
            if isinstance(item, Result):
                return
    finally:
        stop.set()
        worker.join(join_timeout)


def active_runs() -> int:
    """Optimisation workers still alive in this process (0 once every run has stopped or finished)."""
    return sum(t.name.startswith(RUN_THREAD_PREFIX) and t.is_alive() for t in threading.enumerate())


@dataclass
class RunEvent:
    kind: str  # "start" (base image judged), "step" (one optimisation step), "done" (LoRA saved, after judged)
    before: Image.Image | None = None
    p_before: float | None = None
    step: Step | None = None
    after: Image.Image | None = None
    p_after: float | None = None
    path: str | None = None
    history: list[Step] = field(default_factory=list)
    unseen: Evaluation | None = None  # the LoRA judged on unseen seeds at scale 0 and 1


def unseen_markdown(unseen: Evaluation | None) -> str:
    """The end-of-run evaluation on unseen seeds: means, then each seed's P before and after."""
    if unseen is None or unseen.skipped:
        return f"**Unseen seeds:** not evaluated ({unseen.skipped if unseen else 'no evaluation'})."
    rows = ", ".join(f"seed {s}: {a:.2f} -> {b:.2f}" for s, a, b in zip(unseen.seeds, unseen.p_base, unseen.p_lora,
                                                                     strict=True))
    return (f"**Unseen seeds** ({len(unseen.seeds)}, never trained on): mean P(expected answers) "
            f"**{unseen.mean_base:.3f}** at LoRA scale 0 -> **{unseen.mean_lora:.3f}** at scale 1 ({rows}).")


def unseen_gallery(unseen: Evaluation | None, overlay: Image.Image | np.ndarray | None,
                   resolution: int) -> list[tuple[Image.Image, str]]:
    """(image, caption) pairs for a gallery: every unseen seed at scale 0, then at scale 1, overlay on top."""
    if unseen is None or unseen.skipped:
        return []
    rows = [(unseen.images_base, unseen.p_base, "scale 0"), (unseen.images_lora, unseen.p_lora, "scale 1")]
    return [(for_display(overlaid(image, overlay, resolution), DISPLAY // 2), f"seed {seed}, {label}: P {p:.2f}")
            for images, ps, label in rows for image, p, seed in zip(images, ps, unseen.seeds, strict=True)]


def preview_every(steps: int) -> int:
    """Show the judged image about ten times per run."""
    return max(1, round(steps / 10))


def run(generator: Generator, vlm: VLM, prompt: str, seed: int, qa_pairs: Sequence[QA], *, steps: int,
        out_path: str | Path, lock: threading.Lock, overlay: Image.Image | np.ndarray | None = None,
        overlay_description: str = "", target_p: float | None = None) -> Iterator[RunEvent]:
    """The whole job behind the Optimise button, as a stream of events.

    Base image for (prompt, seed) and its score -> the optimisation, step by step -> the LoRA file, the image
    for the same seed with the LoRA at scale 1, and its score. The shared pipeline never keeps the LoRA.
    """
    if overlay is not None:
        overlay = overlays.overlay_array(overlay)
    with lock:
        cond = generator.encode(prompt)
        before = generator.generate(cond, seed)
        p_before = score_image(vlm, before, overlay, list(qa_pairs))
    yield RunEvent("start", before=before, p_before=p_before)
    result: Result | None = None
    for item in optimise_stream(generator, vlm, cond, qa_pairs, lock=lock, overlay=overlay, steps=steps,
                                seed=seed, preview_every=preview_every(steps), target_p=target_p):
        if isinstance(item, Result):
            result = item
        else:
            yield RunEvent("step", step=item)
    save_result(result, str(out_path), generator, prompt, list(qa_pairs), overlay_description)
    with lock:
        with lora.applied(generator.pipe, out_path, 1.0):
            after = generator.generate(cond, seed)
        p_after = score_image(vlm, after, overlay, list(qa_pairs))
    yield RunEvent("done", before=before, p_before=p_before, after=after, p_after=p_after, path=str(out_path),
                   history=result.history, unseen=result.unseen)


def gpu_seconds(preset: Preset, steps: int, n_questions: int = 1) -> int:
    """A ZeroGPU time request for one run: generous per-step estimates, plus loading and two images.

    Flux (12B, 512 px) is about 0.7 s per step on an A100 in the paper (66 s for 100 steps); more questions
    make the VLM batch longer.
    """
    per_step = {"flux": 1.0, "sana": 0.6}.get(preset.generator, 1.0) * max(1, preset.inference_steps) ** 0.5
    per_step *= 1 + 0.3 * (max(1, n_questions) - 1)
    return int(min(1800, 45 + steps * per_step))


# ---------- metadata and uploads -----------------------------------------------------------------


def choose_preset(requested: str | None, env: str | None, has_gpu: bool,
                  gpu_default: str = "flux-schnell", offline_default: str = "toy") -> tuple[str, str | None]:
    """(preset to serve, note for the user). Without a GPU only the offline presets run (toy world, tiny)."""
    from .presets import get_preset

    name = requested or env or (gpu_default if has_gpu else offline_default)
    preset = get_preset(name)
    if not has_gpu and not preset.offline:
        return offline_default, f"No GPU found: serving the offline `{offline_default}` preset instead of `{name}`."
    return name, None


def check_upload(path: str | Path | None, max_bytes: int) -> Path:
    """An uploaded LoRA: present, not too big, a readable .safetensors file with LoRA weights."""
    if not path:
        raise ValueError("no LoRA file: upload a .safetensors file made by this app or pipelines.optimize")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"LoRA file {path.name!r} was not received")
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"LoRA file {path.name!r} is {size / 2**20:.2f} MB; at most {max_bytes / 2**20:.3g} MB")
    return lora.check_lora_file(path, name=path.name)


def check_preset_match(meta: dict[str, object], preset_name: str, filename: str) -> None:
    made_for = meta.get("preset")
    if made_for and made_for != preset_name:
        raise ValueError(f"LoRA file {filename!r} was made for preset {made_for!r}; this app runs {preset_name!r}")


def metadata_markdown(meta: dict[str, object], filename: str) -> str:
    if not meta:
        return f"**{filename}**: no dual-process metadata (a LoRA from elsewhere?)."
    lines = [f"**{filename}**: preset `{meta.get('preset', '?')}`, {meta.get('steps', '?')} steps, "
             f"rank {meta.get('rank', '?')}, alpha {meta.get('alpha', '?')}", f"- prompt: {meta.get('prompt', '')!r}"]
    for q, a in meta.get("questions") or []:
        lines.append(f"- {q} -> **{a}**")
    if meta.get("overlay"):
        lines.append(f"- overlay: {meta['overlay']}")
    return "\n".join(lines)


def slug(text: str, n: int = 32) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:n].strip("-") or "lora"


# ---------- precomputed examples --------------------------------------------------------------------

EXAMPLES: list[dict[str, object]] = [
    {"control": palette.NAME, "prompt": "a cosy reading room with a big armchair", "seed": 1,
     "params": {"palette_colors": " ".join(palette.load_presets()["retro"])}},
    {"control": horizon.NAME, "prompt": "a tropical beach at sunset", "seed": 2, "params": {}},
    {"control": line_weight.NAME, "prompt": "an ink drawing of a city street", "seed": 3, "params": {"line_px": 6}},
    {"control": depth.NAME, "prompt": "a dog in front of a farmhouse", "seed": 4,
     "params": {"depth_relation": "foreground"}},
    {"control": composition.NAME, "prompt": "a meadow with a tall tree", "seed": 5,
     "params": {"composition_mode": "transparent"},
     "questions": ["Is there a vertical object like a tree in the image?"]},
]


def example_drawing(name: str, size: int = DISPLAY) -> Image.Image | None:
    """What a user would paint on the canvas for an example: a tilted horizon stroke, two dots."""
    from PIL import ImageDraw

    if name == horizon.NAME:
        return horizon.render(horizon.Spec(0.35, 4.0, thickness=max(2, size // 64)), (size, size))
    if name == depth.NAME:
        layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        r = max(3, size // 50)
        for x, y in ((0.25, 0.8), (0.7, 0.45)):
            draw.ellipse([x * size - r, y * size - r, x * size + r, y * size + r], fill=(255, 0, 0, 255))
        return layer
    return None


def load_examples(folder: Path = EXAMPLES_DIR) -> dict[str, object] | None:
    """The manifest written by make_examples, with absolute file paths; None if there is none."""
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    for ex in manifest["examples"]:
        for key in ("before", "after", "overlay", "lora", "reference", "drawing", "canvas"):
            if ex.get(key):
                ex[key] = str(folder / ex[key])
    return manifest


def make_examples(generator: Generator, vlm: VLM, folder: Path = EXAMPLES_DIR, steps: int | None = None) -> Path:
    """Run every example once and write its images, LoRA and scores under `folder` (manifest.json)."""
    from overlays.examples import mondrian

    preset = generator.preset
    steps = steps or preset.steps
    folder.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    out = []
    for ex in EXAMPLES:
        name, params = str(ex["control"]), dict(ex["params"])
        entry: dict[str, object] = {"control": name, "prompt": ex["prompt"], "seed": ex["seed"],
                                    "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}}
        drawing = example_drawing(name)
        if drawing is not None:
            drawing.save(folder / f"{name}-drawing.png")
            entry["drawing"] = f"{name}-drawing.png"
            params["drawing"] = np.asarray(drawing)
        if name == composition.NAME:
            reference = mondrian(DISPLAY)
            reference.save(folder / f"{name}-reference.png")
            entry["reference"] = f"{name}-reference.png"
            params |= {"composition_reference": reference, "composition_questions": ex["questions"]}
        control = build_control(name, preset.resolution, **params)
        events = list(run(generator, vlm, str(ex["prompt"]), int(ex["seed"]), control.questions, steps=steps,
                          out_path=folder / f"{name}-lora.safetensors", lock=lock, overlay=control.overlay,
                          overlay_description=control.description))
        done = events[-1]
        done.before.save(folder / f"{name}-before.png")
        done.after.save(folder / f"{name}-after.png")
        editor_value(done.before)["background"].save(folder / f"{name}-canvas.png")
        overlaid(done.before, control.overlay, preset.resolution).save(folder / f"{name}-overlay.png")
        entry |= {"questions": [list(q) for q in control.questions], "p_before": done.p_before,
                  "p_after": done.p_after, "before": f"{name}-before.png", "after": f"{name}-after.png",
                  "overlay": f"{name}-overlay.png", "lora": f"{name}-lora.safetensors", "canvas": f"{name}-canvas.png",
                  "final_loss": done.history[-1].loss, "description": control.description}
        out.append(entry)
        print(f"{name}: P(expected answers) {done.p_before:.4f} -> {done.p_after:.4f}")
    manifest = {"preset": preset.name, "steps": steps, "examples": out}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return folder / "manifest.json"


def main(argv: list[str] | None = None) -> int:
    from .loading import default_device, load_generator, load_vlm
    from .presets import get_preset

    parser = argparse.ArgumentParser(description="Precompute the app's examples (images, LoRAs, scores).")
    parser.add_argument("command", choices=["make-examples"])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--out", default=str(EXAMPLES_DIR))
    args = parser.parse_args(argv)
    preset = get_preset(args.preset)
    device = default_device()
    path = make_examples(load_generator(preset, device), load_vlm(preset, device), Path(args.out), args.steps)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
