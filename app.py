"""Dual-process studio in the browser: steer a text-to-image model with a vision-language model.

    python app.py                         # no GPU: the offline `toy` preset on the CPU (the trained toy world)
    python app.py --preset flux-schnell   # with a GPU; or PRESET=flux-schnell python app.py

The Gradio layer is thin: checks, parsing and the streamed run live in pipelines/studio.py, canvas geometry in
overlays/canvas.py. Models load once per process; every function that touches them is decorated with
`spaces.GPU` when the `spaces` package is importable (Hugging Face ZeroGPU) and runs unchanged without it.
"""

from __future__ import annotations

try:  # ZeroGPU: `spaces` must be imported before anything touches CUDA
    import spaces
except ImportError:
    spaces = None

import argparse
import functools
import gc
import inspect
import logging
import os
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path

import gradio as gr
import torch

from overlays import composition, depth, palette
from overlays.colors import to_hex
from pipelines import judge, refine, studio
from pipelines.cli import fit_upload
from pipelines.generate import generate
from pipelines.generator import Generator
from pipelines.loading import default_device, load_generator, load_vlm
from pipelines.lora import lora_metadata
from pipelines.optimize import with_prompt_guard
from pipelines.presets import get_preset
from pipelines.vlm import VLM

log = logging.getLogger("studio")

MAX_QUEUE = 16
MAX_UPLOAD_MB = 512
KEEP_LABEL = ("Keep the prompt: also ask 'Does this image show {prompt}?' (a guard against the image drifting "
              "away from the prompt)")
GPU = "gpu"  # concurrency id shared by every event that runs the models: one such job at a time
OOM_MESSAGE = ("Out of GPU memory while {what}. Try a smaller resolution or a smaller preset (e.g. PRESET=sana, or "
               "tiny); your inputs are kept and the app keeps serving.")

# ---------- models: loaded once per process, shared by every user ------------------------------------

_MODELS: dict[str, tuple[Generator, VLM]] = {}
_LOAD_LOCK = threading.Lock()
MODEL_LOCK = threading.Lock()  # held while a job uses the shared pipeline (a run's worker holds it throughout)
DEVICES: dict[str, str | None] = {"generator": None, "vlm": None}


def models(preset_name: str) -> tuple[Generator, VLM]:
    with _LOAD_LOCK:
        if preset_name not in _MODELS:
            preset = get_preset(preset_name)
            gen_device = DEVICES["generator"] or default_device()
            _MODELS[preset_name] = (load_generator(preset, gen_device), load_vlm(preset, DEVICES["vlm"] or gen_device))
        return _MODELS[preset_name]


# ---------- GPU functions: plain arguments in, plain results out (ZeroGPU pickles both) ----------------


def _gpu(duration):
    """spaces.GPU with a duration (seconds, or a function of the call's arguments) when on Spaces."""
    if spaces is None:
        return lambda fn: fn
    size = os.environ.get("ZEROGPU_SIZE")  # "large" (48 GB, default) or "xlarge" (96 GB)
    return spaces.GPU(duration=duration, **({"size": size} if size else {}))


def _image_seconds(preset_name: str, *args, **kwargs) -> int:
    return 20 + 2 * get_preset(preset_name).inference_steps


def _run_seconds(preset_name: str, prompt: str, seed: int, qa_pairs: list, steps: int, *args, **kwargs) -> int:
    return studio.gpu_seconds(get_preset(preset_name), steps, len(qa_pairs))


@_gpu(_image_seconds)
def gpu_generate(preset_name: str, prompt: str, seed: int, lora_path: str | None = None, scale: float = 1.0):
    generator, _ = models(preset_name)
    with MODEL_LOCK:
        return generate(generator, prompt, seed, lora_path, scale)


@_gpu(_image_seconds)
def gpu_draft(preset_name: str, prompt: str, n: int) -> tuple[list[str], str]:
    _, vlm = models(preset_name)
    with MODEL_LOCK:
        return studio.draft_questions(vlm, prompt, n)


@_gpu(_run_seconds)
def gpu_run(preset_name: str, prompt: str, seed: int, qa_pairs: list, steps: int, out_path: str, overlay=None,
            overlay_description: str = ""):
    generator, vlm = models(preset_name)
    yield from studio.run(generator, vlm, prompt, seed, qa_pairs, steps=steps, out_path=out_path, lock=MODEL_LOCK,
                          overlay=overlay, overlay_description=overlay_description,
                          target_p=generator.preset.target_p)


def _score_seconds(preset_name: str, prompt: str, images: list, sampled: bool) -> int:
    return 15 + len(images) * (40 if sampled else 10)


@_gpu(_score_seconds)
def gpu_score(preset_name: str, prompt: str, images: list, sampled: bool):
    _, vlm = models(preset_name)
    with MODEL_LOCK:
        reports = [judge.judge(vlm, image, prompt, sampled=sampled) for image in images]
        comparison = judge.compare(vlm, images[0], images[1], prompt) if len(images) == 2 else None
    return reports, comparison


def _refine_seconds(preset_name: str, prompt: str, n: int, *args, **kwargs) -> int:
    return 20 + (n + 1) * (2 * get_preset(preset_name).inference_steps + 6)


@_gpu(_refine_seconds)
def gpu_refine(preset_name: str, prompt: str, n: int, temperature: float, top_p: float, seed: int):
    generator, vlm = models(preset_name)
    with MODEL_LOCK:
        return refine.refine(generator, vlm, prompt, n, temperature, top_p, seed=seed, image_seed=seed)


@_gpu(_image_seconds)
def gpu_recreate(preset_name: str, image, seed: int):
    generator, vlm = models(preset_name)
    with MODEL_LOCK:
        return refine.recreate(generator, vlm, image, seed)


# ---------- errors: what the user reads ----------------------------------------------------------------


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError)
                                                        and "out of memory" in str(exc).lower())


def user_error(exc: Exception, what: str) -> gr.Error:
    if isinstance(exc, gr.Error):
        return exc
    if _is_oom(exc):
        # The traceback's frames still hold the failed step's tensors: drop them before freeing the cache.
        traceback.clear_frames(exc.__traceback__)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning("out of memory while %s", what)
        return gr.Error(OOM_MESSAGE.format(what=what), print_exception=False)
    if isinstance(exc, (ValueError, FileNotFoundError)):
        text = str(exc).strip("'\"")
        return gr.Error(text[:1].upper() + text[1:], print_exception=False)
    log.exception("failed while %s", what)
    return gr.Error(f"Something went wrong while {what} ({type(exc).__name__}: {exc}). The app keeps serving.",
                    print_exception=False)


def user_errors(what: str):
    """Turn bad input (ValueError), out-of-memory and unexpected failures into a gr.Error message."""

    def decorate(fn):
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as exc:
                    raise user_error(exc, what) from None
        else:
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:
                    raise user_error(exc, what) from None
        return wrapper

    return decorate


# ---------- the page ----------------------------------------------------------------------------------


class Results:
    """The output block of a run: status, live image, plots, before/after, scores, LoRA, apply."""

    def __init__(self, prefix: str, resolution: int):
        self.status = gr.Markdown(elem_id=f"{prefix}-status")
        with gr.Row():
            self.live = gr.Image(label="Current image, as the VLM judges it", type="pil", format="png",
                                 interactive=False, height=320, elem_id=f"{prefix}-live")
            with gr.Column():
                self.loss = gr.LinePlot(x="step", y="loss", title="Loss, -log P(expected answers)", height=150,
                                        elem_id=f"{prefix}-loss")
                self.p = gr.LinePlot(x="step", y="p_yes", title="P(expected answers)", y_title="P", height=150,
                                     elem_id=f"{prefix}-p")
        with gr.Row():
            self.slider = gr.ImageSlider(label="Before / after: same seed, LoRA at scale 1", type="pil",
                                         format="png", interactive=False, height=360, elem_id=f"{prefix}-slider")
            with gr.Column():
                self.scores = gr.Markdown(elem_id=f"{prefix}-scores")
                self.download = gr.DownloadButton("Download the LoRA (.safetensors)", elem_id=f"{prefix}-download")
        self.unseen = gr.Gallery(label="Unseen seeds (never trained on): top row LoRA scale 0, bottom row scale 1",
                                 columns=4, height=300, elem_id=f"{prefix}-unseen")
        with gr.Accordion("Apply the LoRA to a new prompt or seed (one pass)", open=True):
            with gr.Row():
                self.apply_prompt = gr.Textbox(label="Prompt", value="a desert at noon", scale=3)
                self.apply_seed = gr.Number(label="Seed", value=1, precision=0, minimum=0, maximum=studio.MAX_SEED)
                self.apply_scale = gr.Slider(0, studio.MAX_SCALE, value=1.0, step=0.1, label="LoRA scale")
            self.apply_button = gr.Button("Generate with the LoRA", elem_id=f"{prefix}-apply")
            self.applied = gr.Image(label=f"With the LoRA ({resolution} px)", type="pil", format="png",
                                    interactive=False, height=320, elem_id=f"{prefix}-applied")

    @property
    def outputs(self) -> list:
        return [self.status, self.live, self.loss, self.p, self.slider, self.scores, self.download, self.unseen]


def build_demo(preset_name: str = "tiny", *, max_queue: int = MAX_QUEUE, max_upload_mb: float = MAX_UPLOAD_MB,
               output_dir: str | Path | None = None, note: str | None = None) -> gr.Blocks:
    """The whole app for one preset (its models load here, once per process). Launch it yourself."""
    preset = get_preset(preset_name)
    models(preset_name)
    res = preset.resolution
    root = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="dual-process-studio-"))
    root.mkdir(parents=True, exist_ok=True)
    max_upload = int(max_upload_mb * 2**20)
    palettes = palette.load_presets()
    examples = studio.load_examples()

    # ----- per-user state: a folder for the session's LoRA files, and its latest LoRA per tab -----
    def new_session(request: gr.Request | None) -> dict:
        key = getattr(request, "session_hash", None) or uuid.uuid4().hex
        folder = root / studio.slug(key, 64)
        folder.mkdir(parents=True, exist_ok=True)
        return {"dir": str(folder), "lora": {}, "runs": 0}

    def drop_session(session: dict | None) -> None:
        if session:
            shutil.rmtree(session["dir"], ignore_errors=True)

    # ----- handlers -----
    @user_errors("generating the base image")
    def generate_base(prompt, seed):
        prompt, seed = studio.check_prompt(prompt), studio.check_seed(seed)
        image = gpu_generate(preset_name, prompt, seed)
        note = preset.prompt_note(prompt)
        return (image, studio.editor_value(image),
                f"Base image for seed {seed}: draw on it on the right." + (f"\n\n_{note}_" if note else ""))

    def build(control, drawing, questions_box, palette_colors, line_px, relation, contrast, reference, mode):
        qs = []
        if control == composition.NAME and (questions_box or "").strip():
            qs = [q for q, _ in studio.parse_questions(questions_box)]
        return studio.build_control(control, res, drawing=drawing, palette_colors=palette_colors, line_px=line_px,
                                    depth_relation=relation, depth_contrast=contrast,
                                    composition_reference=reference, composition_mode=mode,
                                    composition_questions=qs)

    def preview(base, control, drawing, questions, palette_colors=None, line_px=4, relation="foreground",
                contrast=False, reference=None, mode="transparent"):
        """The overlay on the base image at the generator's resolution, and the exact questions. Never raises
        for bad input: the problem is shown in the note (this runs on every edit)."""
        try:
            ctrl = build(control, drawing, questions, palette_colors, line_px, relation, contrast, reference, mode)
        except ValueError as exc:
            return studio.for_display(studio.overlaid(base, None, res)), f"**Overlay:** {exc}"
        try:
            box = (questions or "").strip()
            qa = studio.parse_questions(box) if box else ctrl.questions
            asked = "\n".join(f"{i}. {q} -> expected **{a}**" for i, (q, a) in enumerate(qa, 1))
        except ValueError as exc:
            asked = f"**Questions:** {exc}"
        notes = "".join(f"\n\n_{n}_" for n in ctrl.notes)
        text = f"**The VLM sees this** ({res}x{res} px; {ctrl.description}) and is asked:\n\n{asked}{notes}"
        return studio.for_display(studio.overlaid(base, ctrl.overlay, res)), text

    def groups_for(control):
        return [gr.update(visible=control == name) for name in (palette.NAME, "line-weight", depth.NAME,
                                                                 composition.NAME)]

    def canvas_hint(control) -> str:
        untrained = preset.control_note(control)
        return _canvas_hint(control) + (f"\n\n_{untrained}_" if untrained else "")

    def _canvas_hint(control) -> str:
        if control == "line-weight":
            return (f"**Draw {studio.DRAWN[control]}** on the canvas (red brush), or set the line weight on the "
                    "left; a drawn stroke wins.")
        if control in studio.DRAWN:
            return f"**Draw {studio.DRAWN[control]}** on the canvas (red brush)."
        return f"The {control} control is set with the inputs on the left; the canvas is not used."

    def on_control(control, relation, contrast, base):
        return (*groups_for(control), studio.default_questions(control, relation, contrast),
                studio.editor_value(base or studio.checkerboard(res)), canvas_hint(control))

    def on_example(*values):
        return (*groups_for(values[2]), canvas_hint(values[2]))

    def stream(tab, session, request, progress, prompt, seed, qa, steps, overlay=None, description=""):
        session = session or new_session(request)
        session["runs"] += 1
        out_path = Path(session["dir"]) / f"{tab}-{session['runs']}-{studio.slug(prompt)}.safetensors"
        history, skip = [], gr.skip()
        empty = studio.history_frame([])
        start, last = time.monotonic(), 0.0
        asked = "\n".join(f"- {q} -> expected **{a}**" for q, a in qa)
        yield ("Generating the base image and asking the VLM...", None, empty, empty, None, "", None, [], session)
        for event in gpu_run(preset_name, prompt, seed, qa, steps, str(out_path), overlay, description):
            if event.kind == "start":
                yield (f"Optimising: step 0/{steps}. P(expected answers) before: {event.p_before:.4f}",
                       studio.for_display(event.before), skip, skip, skip, skip, skip, skip, session)
            elif event.kind == "step":
                step = event.step
                history.append(step)
                progress((step.step, steps), desc="optimising", unit="steps")
                now = time.monotonic()
                if step.preview is None and step.step < steps and now - last < 0.5:
                    continue  # at most two plot updates a second between previews
                last = now
                frame = studio.history_frame(history)
                yield (f"Optimising: step {step.step}/{steps}, loss {step.loss:.4f}, P {step.p_yes:.4f}, "
                       f"{step.elapsed:.1f} s", studio.for_display(step.preview) if step.preview else skip,
                       frame, frame, skip, skip, skip, skip, session)
            else:
                session["lora"][tab] = event.path
                frame = studio.history_frame(event.history)
                scores = (f"**P(expected answers)** for seed {seed}, as the VLM sees it: before "
                          f"**{event.p_before:.4f}**, after **{event.p_after:.4f}** (LoRA scale 1)\n\n{asked}\n\n"
                          f"LoRA `{Path(event.path).name}`: {len(event.history)} steps, rank {preset.lora_rank}\n\n"
                          f"{studio.unseen_markdown(event.unseen)}")
                yield (f"Done: {len(event.history)} steps in {time.monotonic() - start:.1f} s, final loss "
                       f"{event.history[-1].loss:.4f}.", studio.for_display(studio.overlaid(event.after, overlay, res)),
                       frame, frame,
                       (studio.for_display(event.before), studio.for_display(event.after)), scores, event.path,
                       studio.unseen_gallery(event.unseen, overlay, res), session)

    @user_errors("optimising")
    def optimise(prompt, seed, control, canvas, questions, steps, palette_colors=None, line_px=4,
                 depth_relation="foreground", depth_contrast=False, composition_reference=None,
                 composition_mode="transparent", keep_prompt=False, session=None, request: gr.Request = None,
                 progress=gr.Progress()):  # noqa: B008
        prompt, seed = studio.check_prompt(prompt), studio.check_seed(seed)
        steps = studio.check_steps(steps)
        ctrl = build(control, canvas, questions, palette_colors, line_px, depth_relation, depth_contrast,
                     composition_reference, composition_mode)
        box = (questions or "").strip()
        qa = studio.parse_questions(box) if box else ctrl.questions
        if keep_prompt:
            qa = with_prompt_guard(qa, prompt)
        yield from stream("visual", session, request, progress, prompt, seed, qa, steps, ctrl.overlay,
                          ctrl.description)

    @user_errors("optimising")
    def ask_optimise(prompt, seed, questions, steps, keep_prompt=False, session=None, request: gr.Request = None,
                     progress=gr.Progress()):  # noqa: B008
        prompt, seed = studio.check_prompt(prompt), studio.check_seed(seed)
        steps = studio.check_steps(steps)
        qa = studio.parse_questions(questions)
        if keep_prompt:
            qa = with_prompt_guard(qa, prompt)
        yield from stream("ask", session, request, progress, prompt, seed, qa, steps)

    @user_errors("drafting questions")
    def draft_questions(prompt, n):
        prompt = studio.check_prompt(prompt)
        n = studio.check_int(n, "number of questions", 1, studio.MAX_QUESTIONS)
        questions, note = gpu_draft(preset_name, prompt, n)
        return "\n".join(f"{q} | Yes" for q in questions), note + " 'Answer with Yes or No.' is added when asked."

    def stopped():
        time.sleep(0.3)  # let the cancelled run's last update land first
        return ("Stopped. The base model is unchanged; the evaluation on unseen seeds was skipped because the run was "
                "stopped. Press Optimise to start again.")

    def make_apply(tab):
        @user_errors("applying the LoRA")
        def apply_lora(prompt, seed, scale, session=None):
            path = (session or {}).get("lora", {}).get(tab)
            if not path:
                raise ValueError("there is no LoRA in this session yet: press Optimise first "
                                 "(or upload one in the 'Use a LoRA' tab)")
            prompt, seed, scale = studio.check_prompt(prompt), studio.check_seed(seed), studio.check_scale(scale)
            return gpu_generate(preset_name, prompt, seed, path, scale)

        return apply_lora

    def checked_upload(file) -> tuple[Path, dict]:
        path = studio.check_upload(file, max_upload)
        meta = lora_metadata(path)
        studio.check_preset_match(meta, preset_name, path.name)
        return path, meta

    @user_errors("reading the LoRA file")
    def upload_lora(file):
        path, meta = checked_upload(file)
        return meta, studio.metadata_markdown(meta, path.name)

    @user_errors("applying the uploaded LoRA")
    def apply_uploaded(file, prompt, seed, scale):
        path, meta = checked_upload(file)
        prompt, seed, scale = studio.check_prompt(prompt), studio.check_seed(seed), studio.check_scale(scale)
        return gpu_generate(preset_name, prompt, seed, str(path), scale), studio.metadata_markdown(meta, path.name)

    @user_errors("reading the palette")
    def palette_from_base(base, n):
        if base is None:
            raise ValueError("there is no base image yet: press 'Generate base image' first")
        n = studio.check_int(n, "number of colours", palette.MIN_SWATCHES, palette.MAX_SWATCHES)
        return " ".join(to_hex(c) for c in palette.extract_palette(base, n))

    @user_errors("adding a swatch")
    def add_swatch(colors, swatch):
        current = studio.parse_colors(colors) if (colors or "").strip() else []
        if len(current) >= palette.MAX_SWATCHES:
            raise ValueError(f"the palette already has {len(current)} swatches; at most {palette.MAX_SWATCHES}")
        return " ".join(current + studio.parse_colors(swatch))

    # ----- scoring and refinement (judge.py, refine.py) -----
    def uploaded(image, label: str) -> tuple[object, list[str]]:
        if image is None:
            return None, []
        image, note = fit_upload(image)
        return image, [f"_Image {label}: {note}._"] if note else []

    @user_errors("generating images to score")
    def score_generate(prompt, seed):
        prompt, seed = studio.check_prompt(prompt), studio.check_seed(seed)
        second = min(seed + 1, studio.MAX_SEED)
        return gpu_generate(preset_name, prompt, seed), gpu_generate(preset_name, prompt, second)

    @user_errors("scoring")
    def score(prompt, image_a, image_b, sampled):
        prompt = studio.check_prompt(prompt)
        (a, note_a), (b, note_b) = uploaded(image_a, "A"), uploaded(image_b, "B")
        if a is None:
            raise ValueError("there is no image A: upload one or press 'Generate A and B'")
        images = [a] if b is None else [a, b]
        reports, comparison = gpu_score(preset_name, prompt, images, bool(sampled))
        titled = zip(reports, ["Image A", "Image B"], strict=False)
        parts = note_a + note_b + [judge.report_markdown(r, title) for r, title in titled]
        if comparison is not None:
            parts.append(judge.comparison_markdown(comparison))
        return "\n\n".join(parts)

    @user_errors("refining the prompt")
    def refine_prompt(prompt, n, temperature, top_p, seed):
        prompt, seed = studio.check_prompt(prompt), studio.check_seed(seed)
        n = studio.check_int(n, "number of candidates", 1, refine.MAX_CANDIDATES)
        temperature = studio.check_real(temperature, "temperature", 0.05, 2.0)
        top_p = studio.check_real(top_p, "top-p", 0.05, 1.0)
        rows = gpu_refine(preset_name, prompt, n, temperature, top_p, seed)
        gallery = [(studio.for_display(r.image), f"#{i} {r.combined:.2f}{' (your prompt)' if r.baseline else ''}: "
                    f"{r.prompt}") for i, r in enumerate(rows, 1)]
        choices = [f"#{i}: {r.prompt}" for i, r in enumerate(rows, 1)]
        best, base = rows[0], next(r for r in rows if r.baseline)
        note = (f"{len(rows) - 1} candidates and your prompt, all from seed {seed}, judged by the same VLM. "
                + ("**Your own prompt scored best.**" if best.baseline else
                   f"Best: **{best.combined:.2f}** against **{base.combined:.2f}** for your prompt."))
        if any(r.truncated for r in rows):
            note += " Rows marked [cut] were shortened at a word boundary to fit the generator's text limit."
        return gallery, refine.table(rows), gr.update(choices=choices, value=choices[0]), note

    def chosen_prompt(choice):
        text = (choice or "").split(": ", 1)[-1].strip()
        if not text:
            raise gr.Error("there is no candidate yet: press 'Refine' first")
        return text, gr.Tabs(selected="visual")

    @user_errors("writing a prompt from the image")
    def image_to_prompt(image, seed):
        image, note = uploaded(image, "")
        if image is None:
            raise ValueError("there is no image: upload the picture to describe")
        candidate, closeness = gpu_recreate(preset_name, image, studio.check_seed(seed))
        text = (f"Similarity of the recreated image to yours: **{closeness:.3f}** (P(Yes) that both show the same "
                f"scene, both orders averaged).")
        if candidate.truncated:
            text += " The prompt was cut at a word boundary to fit the generator's text limit."
        return candidate.prompt, studio.for_display(candidate.image), "\n\n".join([text, *note])

    def send_prompt(text):
        return studio.check_prompt(text), gr.Tabs(selected="visual")

    # ----- layout -----
    header = ["# Dual-process studio\nDraw a visual prompt or ask questions: a vision-language model (VLM) "
              "judges the generator's images, and a LoRA of the generator learns to make it answer as you expect "
              "(Luo et al. 2025, \"Dual-Process Image Generation\").",
              f"Preset `{preset.name}`: {preset.description}."]
    if preset.known_prompts:
        header.append(
            f"**The toy world (preset `{preset.name}`, on the CPU).** A tiny generator trained here on synthetic "
            f"landscapes of {len(preset.known_prompts)} prompts ({', '.join(preset.known_prompts)}), and a tiny VLM "
            "trained to answer the horizon and palette questions and 'Does this image show {prompt}?'. It is "
            "small enough to train in minutes and to show the method steering a real picture offline; "
            f"the other controls ({', '.join(c for c in studio.CONTROL_NAMES if preset.control_note(c))}) are "
            "untrained there and say so. Start the app on a GPU with `--preset flux-schnell` for real models.")
    elif preset.random_weights:
        header.append(f"**Offline demo: preset `{preset.name}` has random weights, so its images are noise.** "
                      "Every code path is the real one; start the app on a GPU with `--preset flux-schnell` for "
                      "real pictures.")
    if note:
        header.append(f"_{note}_")
    header.append(f"One job runs at a time and up to {max_queue} wait in line; when the line is full the page "
                  "says the app is busy: try again a little later.")
    start_control = "horizon"
    first_prompt = preset.known_prompts[0] if preset.known_prompts else "a tropical beach at sunset"
    with gr.Blocks(title="Dual-process studio") as demo:
        gr.Markdown("\n\n".join(header), elem_id="header")
        session = gr.State(None, delete_callback=drop_session)
        with gr.Tabs() as tabs:
            with gr.Tab("Visual prompts", id="visual"):
                with gr.Row():
                    with gr.Column(scale=2):
                        prompt = gr.Textbox(label="Prompt", value=first_prompt, elem_id="prompt")
                        with gr.Row():
                            seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, maximum=studio.MAX_SEED,
                                             elem_id="seed")
                            gen_button = gr.Button("Generate base image", elem_id="generate")
                        base = gr.Image(label=f"Base image ({res} px)", type="pil", format="png", interactive=False,
                                        height=180, elem_id="base")
                        base_note = gr.Markdown()
                        control = gr.Radio(list(studio.CONTROL_NAMES), value=start_control, label="Control",
                                           elem_id="control")
                        with gr.Group(visible=False) as g_palette:
                            palette_preset = gr.Dropdown(sorted(palettes), value="retro", label="Palette preset")
                            palette_colors = gr.Textbox(label="Swatches (2 to 8 colours)",
                                                        value=" ".join(palettes["retro"]), elem_id="palette-colors")
                            with gr.Row():
                                swatch = gr.ColorPicker(value="#2a9d8f", label="Colour")
                                add_button = gr.Button("Add swatch", size="sm")
                                n_colours = gr.Number(value=5, precision=0, minimum=2, maximum=8, label="Colours")
                                from_base = gr.Button("Take from base image", size="sm")
                            palette_image = gr.Image(label="Or take the colours of a picture", type="pil",
                                                     sources=["upload"], format="png", height=140,
                                                     elem_id="palette-image")
                        with gr.Group(visible=False) as g_line:
                            line_px = gr.Slider(1, studio.max_line_px(res), value=min(4, studio.max_line_px(res)),
                                                step=1, label=f"Line weight (px at {res} px)", elem_id="line-px")
                        with gr.Group(visible=False) as g_depth:
                            relation = gr.Dropdown(list(depth.RELATIONS), value="foreground",
                                                   label="Point A (the left dot) is ... relative to Point B")
                            contrast = gr.Checkbox(False, label="Also ask the swapped question (expects No)")
                        with gr.Group(visible=False) as g_composition:
                            reference = gr.Image(label="Reference under your annotations (optional; e.g. an "
                                                 "annotated painting)", type="pil", image_mode="RGBA",
                                                 sources=["upload"], format="png", height=200,
                                                 elem_id="reference")
                            comp_mode = gr.Radio(list(composition.MODES), value="transparent", label="Blend")
                        questions = gr.Textbox(label="Questions for the VLM: one per line, 'question | expected "
                                               "answer'", value=studio.default_questions(start_control), lines=3,
                                               elem_id="questions")
                        steps = gr.Slider(1, studio.MAX_STEPS, value=preset.steps, step=1, label="Steps",
                                          elem_id="steps")
                        keep = gr.Checkbox(preset.keep_prompt, label=KEEP_LABEL, elem_id="keep-prompt")
                        with gr.Row():
                            opt_button = gr.Button("Optimise", variant="primary", elem_id="optimise")
                            stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
                    with gr.Column(scale=3):
                        hint = gr.Markdown(canvas_hint(start_control), elem_id="canvas-hint")
                        editor = gr.ImageEditor(
                            value=studio.editor_value(studio.checkerboard(res)), type="numpy", image_mode="RGBA",
                            label="Canvas", canvas_size=(studio.DISPLAY, studio.DISPLAY), fixed_canvas=True,
                            sources=(), transforms=(),
                            brush=gr.Brush(colors=["#ff0000"], default_size=10, color_mode="fixed"),
                            layers=gr.LayerOptions(layers=["drawing"], allow_additional_layers=False),
                            format="png", height=600, elem_id="canvas")
                        overlay_view = gr.Image(label="What the VLM sees", type="pil", format="png",
                                                interactive=False, height=320, elem_id="preview")
                        overlay_note = gr.Markdown(elem_id="preview-note")
                results = Results("visual", res)
                if examples:
                    other = examples["preset"] != preset.name
                    gr.Markdown(f"### Examples\nComputed ahead with preset `{examples['preset']}` "
                                f"({examples['steps']} steps)" + (", not the preset running here" if other else "")
                                + (": random weights, so noise" if examples["preset"].startswith("tiny") else "")
                                + ". Click one to load its settings and its before/after without running it.")
                    rows, labels = [], []
                    for ex in examples["examples"]:
                        qtext = studio.format_questions([tuple(q) for q in ex["questions"]])
                        p = ex["params"]
                        drawing = {"background": ex["canvas"],
                                   "layers": [ex["drawing"]] if ex.get("drawing") else [], "composite": None}
                        rows.append([
                            ex["prompt"], ex["seed"], ex["control"], ex["before"], drawing, qtext,
                            p.get("palette_colors", palette_colors.value), p.get("line_px", line_px.value),
                            p.get("depth_relation", "foreground"), ex.get("reference"), (ex["before"], ex["after"]),
                            f"**Precomputed** with `{examples['preset']}`: P(expected answers) before "
                            f"**{ex['p_before']:.4f}**, after **{ex['p_after']:.4f}**\n\n{qtext}"])
                        labels.append(f"{ex['control']}: {ex['prompt']}")
                    gr.Examples(rows, inputs=[prompt, seed, control, base, editor, questions, palette_colors, line_px,
                                              relation, reference, results.slider, results.scores],
                                outputs=[g_palette, g_line, g_depth, g_composition, hint], fn=on_example,
                                run_on_click=True, cache_examples=False, example_labels=labels,
                                label="Precomputed examples", api_visibility="private")

            with gr.Tab("Ask anything", id="ask"):
                with gr.Row():
                    with gr.Column():
                        ask_prompt = gr.Textbox(label="Prompt", value="a red apple on a wooden table next to a glass "
                                                "of milk", elem_id="ask-prompt")
                        ask_seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, maximum=studio.MAX_SEED)
                        with gr.Row():
                            n_questions = gr.Slider(1, studio.MAX_QUESTIONS, value=4, step=1,
                                                    label="Questions to draft")
                            draft_button = gr.Button("Draft questions with the VLM", elem_id="draft")
                        ask_questions = gr.Textbox(
                            label="Questions: one per line, 'question | expected answer' (default Yes)", lines=5,
                            value="Is there a red apple in the image? | Yes\nIs there a glass of milk? | Yes",
                            elem_id="ask-questions")
                        draft_note = gr.Markdown()
                        ask_steps = gr.Slider(1, studio.MAX_STEPS, value=preset.steps, step=1, label="Steps")
                        ask_keep = gr.Checkbox(preset.keep_prompt, label=KEEP_LABEL)
                        with gr.Row():
                            ask_button = gr.Button("Optimise", variant="primary", elem_id="ask-optimise")
                            ask_stop = gr.Button("Stop", variant="stop", elem_id="ask-stop")
                ask_results = Results("ask", res)

            with gr.Tab("Use a LoRA", id="lora"):
                gr.Markdown(f"Upload a LoRA made earlier by this app or `pipelines.optimize` for preset "
                            f"`{preset.name}` (.safetensors, at most {max_upload_mb:g} MB) and apply it.")
                with gr.Row():
                    with gr.Column():
                        lora_file = gr.File(label="LoRA file", file_types=[".safetensors"], type="filepath",
                                            elem_id="lora-file")
                        lora_info = gr.Markdown()
                        lora_meta = gr.JSON(label="Metadata")
                    with gr.Column():
                        up_prompt = gr.Textbox(label="Prompt", value="a lighthouse on a cliff")
                        with gr.Row():
                            up_seed = gr.Number(label="Seed", value=0, precision=0, minimum=0,
                                                maximum=studio.MAX_SEED)
                            up_scale = gr.Slider(0, studio.MAX_SCALE, value=1.0, step=0.1, label="LoRA scale")
                        up_button = gr.Button("Generate with the LoRA", variant="primary")
                        up_image = gr.Image(label="With the LoRA", type="pil", format="png", interactive=False,
                                            height=320)

            with gr.Tab("Score", id="score"):
                gr.Markdown("The loaded VLM as a judge: aesthetics, alignment with the prompt and overall preference "
                            "on a 0-5 scale (Poor, Below Average, Average, Above Average, Very Good, Excellent), read "
                            "from its digit probabilities, and VQAScore. With two images it also says which is "
                            "better, asking with both orders so the order cannot matter.")
                with gr.Row():
                    score_prompt = gr.Textbox(label="What the images should show", scale=3,
                                              value="a red bicycle leaning on a brick wall", elem_id="score-prompt")
                    score_seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, maximum=studio.MAX_SEED)
                    score_gen = gr.Button("Generate A and B (seeds s and s+1)", elem_id="score-generate")
                with gr.Row():
                    image_a = gr.Image(label="Image A", type="pil", sources=["upload"], format="png", height=280,
                                       elem_id="score-a")
                    image_b = gr.Image(label="Image B (optional: compare with A)", type="pil", sources=["upload"],
                                       format="png", height=280, elem_id="score-b")
                sampled = gr.Checkbox(False, label="Sampled verdicts: average 3 written answers (T = 0.9) instead "
                                                   "of the digit probabilities")
                score_button = gr.Button("Score", variant="primary", elem_id="score")
                score_out = gr.Markdown(elem_id="score-result")

            with gr.Tab("Refine prompt", id="refine"):
                gr.Markdown("The VLM rewrites a short prompt into candidates; each is generated from the same seed, "
                            "the same VLM judges every image, and the candidates are ranked with your prompt as the "
                            "baseline (self-rewarding refinement).")
                with gr.Row():
                    with gr.Column(scale=2):
                        refine_box = gr.Textbox(label="Short prompt", value="a cat on a windowsill",
                                                elem_id="refine-prompt")
                        with gr.Row():
                            refine_n = gr.Slider(1, refine.MAX_CANDIDATES, value=8, step=1, label="Candidates")
                            refine_seed = gr.Number(label="Seed", value=0, precision=0, minimum=0,
                                                    maximum=studio.MAX_SEED)
                        with gr.Row():
                            refine_t = gr.Slider(0.05, 2.0, value=0.9, step=0.05, label="Temperature")
                            refine_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p")
                        refine_button = gr.Button("Refine", variant="primary", elem_id="refine")
                        refine_note = gr.Markdown(elem_id="refine-note")
                        refine_choice = gr.Dropdown([], label="Candidate to use", elem_id="refine-choice")
                        use_button = gr.Button("Use this prompt in Visual prompts", elem_id="refine-use")
                    with gr.Column(scale=3):
                        refine_gallery = gr.Gallery(label="Candidates, best first", columns=3, height=420,
                                                    elem_id="refine-gallery")
                refine_table = gr.Dataframe(headers=refine.TABLE_HEADERS, interactive=False, wrap=True,
                                            label="Scores (0-5; VQAScore 0-1)", elem_id="refine-table")
                with gr.Accordion("From an image: write a prompt that recreates it", open=False):
                    with gr.Row():
                        with gr.Column():
                            i2p_image = gr.Image(label="Your image", type="pil", sources=["upload"], format="png",
                                                 height=260, elem_id="i2p-image")
                            i2p_seed = gr.Number(label="Seed", value=0, precision=0, minimum=0,
                                                 maximum=studio.MAX_SEED)
                            i2p_button = gr.Button("Write a prompt and recreate", elem_id="i2p")
                        with gr.Column():
                            i2p_prompt = gr.Textbox(label="Prompt written by the VLM", lines=3, elem_id="i2p-prompt")
                            i2p_result = gr.Image(label="Recreated", type="pil", format="png", interactive=False,
                                                  height=260)
                            i2p_note = gr.Markdown(elem_id="i2p-note")
                            i2p_use = gr.Button("Use this prompt in Visual prompts")

        # ----- events -----
        gpu = dict(concurrency_id=GPU, concurrency_limit=1)
        light = dict(queue=False, api_visibility="private", show_progress="hidden")
        params = [palette_colors, line_px, relation, contrast, reference, comp_mode]
        show = dict(fn=preview, inputs=[base, control, editor, questions, *params],
                    outputs=[overlay_view, overlay_note])
        # the user's strokes; registered first so that this event is the one named /preview
        editor.input(**show, api_name="preview", queue=False, show_progress="hidden")
        gen_button.click(generate_base, [prompt, seed], [base, editor, base_note], api_name="generate", **gpu)
        prompt.submit(generate_base, [prompt, seed], [base, editor, base_note], api_visibility="private", **gpu)
        control.input(on_control, [control, relation, contrast, base],
                      [g_palette, g_line, g_depth, g_composition, questions, editor, hint],
                      **light).then(**show, **light)
        for c in (relation, contrast):
            c.input(studio.default_questions, [control, relation, contrast], questions, **light).then(**show, **light)
        editor.change(**show, **light)  # values set by the server or an example
        for c in (base, line_px, reference, comp_mode):
            c.change(**show, **light)
        questions.change(**show, **light)
        palette_colors.blur(**show, **light)
        palette_colors.submit(**show, **light)
        demo.load(**show, **light)
        palette_preset.input(lambda name: " ".join(palettes[name]), palette_preset, palette_colors,
                             **light).then(**show, **light)
        add_button.click(add_swatch, [palette_colors, swatch], palette_colors, **light).then(**show, **light)
        from_base.click(palette_from_base, [base, n_colours], palette_colors, **light).then(**show, **light)
        palette_image.upload(palette_from_base, [palette_image, n_colours], palette_colors,
                             **light).then(**show, **light)

        run_event = opt_button.click(
            optimise, [prompt, seed, control, editor, questions, steps, *params, keep, session],
            [*results.outputs, session], api_name="optimise", show_progress_on=[results.status], **gpu)
        stop_button.click(None, None, None, cancels=[run_event], api_visibility="private").then(
            stopped, None, results.status, **light)
        results.apply_button.click(make_apply("visual"), [results.apply_prompt, results.apply_seed,
                                                          results.apply_scale, session], results.applied,
                                   api_name="apply_lora", **gpu)

        draft_button.click(draft_questions, [ask_prompt, n_questions], [ask_questions, draft_note],
                           api_name="draft_questions", **gpu)
        ask_event = ask_button.click(ask_optimise, [ask_prompt, ask_seed, ask_questions, ask_steps, ask_keep, session],
                                     [*ask_results.outputs, session], api_name="ask_optimise",
                                     show_progress_on=[ask_results.status], **gpu)
        ask_stop.click(None, None, None, cancels=[ask_event], api_visibility="private").then(
            stopped, None, ask_results.status, **light)
        ask_results.apply_button.click(make_apply("ask"), [ask_results.apply_prompt, ask_results.apply_seed,
                                                           ask_results.apply_scale, session], ask_results.applied,
                                       api_name="ask_apply_lora", **gpu)

        lora_file.upload(upload_lora, lora_file, [lora_meta, lora_info], api_name="upload_lora")
        up_button.click(apply_uploaded, [lora_file, up_prompt, up_seed, up_scale], [up_image, lora_info],
                        api_name="apply_uploaded", **gpu)

        score_gen.click(score_generate, [score_prompt, score_seed], [image_a, image_b], api_name="score_generate",
                        **gpu)
        score_button.click(score, [score_prompt, image_a, image_b, sampled], score_out, api_name="score", **gpu)
        refine_button.click(refine_prompt, [refine_box, refine_n, refine_t, refine_p, refine_seed],
                            [refine_gallery, refine_table, refine_choice, refine_note], api_name="refine", **gpu)
        use_button.click(chosen_prompt, refine_choice, [prompt, tabs], api_name="use_prompt", queue=False)
        i2p_button.click(image_to_prompt, [i2p_image, i2p_seed], [i2p_prompt, i2p_result, i2p_note],
                         api_name="image_to_prompt", **gpu)
        i2p_use.click(user_errors("sending the prompt")(send_prompt), i2p_prompt, [prompt, tabs],
                      api_visibility="private", queue=False)
    demo.queue(max_size=max_queue, default_concurrency_limit=1)
    demo.studio_root = root  # where the sessions' LoRA files go
    return demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Dual-process studio: the Gradio app.")
    parser.add_argument("--preset", help="preset to serve (default: $PRESET, else flux-schnell with a GPU, tiny "
                                         "without)")
    parser.add_argument("--host", default=None, help="address to listen on (default: Gradio's, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--max-queue", type=int, default=MAX_QUEUE, help="jobs that may wait in line")
    parser.add_argument("--gen-device", help="device of the generator (default: cuda if present)")
    parser.add_argument("--vlm-device", help="device of the VLM (default: the generator's)")
    args = parser.parse_args(argv)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # not "no LoRA keys for the text encoder" on every apply
    has_gpu = torch.cuda.is_available()
    name, note = studio.choose_preset(args.preset, os.environ.get("PRESET"), has_gpu)
    if note:
        print(note)
    DEVICES.update(generator=args.gen_device, vlm=args.vlm_device)
    print(f"loading preset {name!r} ...")
    demo = build_demo(name, max_queue=args.max_queue, note=note)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=f"{MAX_UPLOAD_MB}mb", show_error=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
