"""The output block of an optimization (status, live image, plots, before/after, unseen seeds, the LoRA, apply it)
and the stream that fills it; the Visual prompts and Ask anything tabs each have one.

Streamed updates are dicts keyed by the block's field names (`Results.components` maps them to components).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from pipelines.checks import APP_MAX_SCALE, MAX_SEED, check_prompt, check_scale, check_seed
from pipelines.optimize import EVAL_SEEDS, Evaluation, Step

from .context import GPU_EVENT, LIGHT_EVENT, App, NumberBox, SliderBox, handler
from .controls import DISPLAY, for_display, overlaid
from .gpu import gpu_generate, gpu_run
from .messages import user_errors
from .sessions import new_session, slug

CONTINUE_LABEL = ("Continue from this LoRA: the next Optimize starts from the LoRA above (or the one sent from "
                  "'Use a LoRA') instead of from zero")
# The Download button says when there is nothing to download (a click on an empty one would do nothing).
DOWNLOAD_LABEL = "Download the LoRA (.safetensors)"
NO_DOWNLOAD_LABEL = "No LoRA to download yet: press Optimize (a stopped run keeps its LoRA too)"
FIELDS = ("status", "live", "loss", "p", "slider", "scores", "download", "unseen", "session")


class Results:
    """The components of the block; `components` maps FIELDS (but the session) to them."""

    def __init__(self, prefix: str, resolution: int, apply_prompt: str):
        self.prefix = prefix
        self.status = gr.Markdown(elem_id=f"{prefix}-status")
        with gr.Row():
            self.live = gr.Image(label="Current image, as the VLM judges it", type="pil", format="png",
                                 interactive=False, height=320, elem_id=f"{prefix}-live")
            with gr.Column():
                self.loss = gr.LinePlot(x="step", y="loss", title="Loss, -log P(expected answers)", height=150,
                                        elem_id=f"{prefix}-loss")
                self.p = gr.LinePlot(x="step", y="p", title="P(expected answers)", y_title="P", height=150,
                                     elem_id=f"{prefix}-p")
        with gr.Row():
            self.slider = gr.ImageSlider(label="Before / after: same seed, LoRA at scale 1", type="pil",
                                         format="png", interactive=False, height=360, elem_id=f"{prefix}-slider")
            with gr.Column():
                self.scores = gr.Markdown(elem_id=f"{prefix}-scores")
                self.download = gr.DownloadButton(NO_DOWNLOAD_LABEL, interactive=False, elem_id=f"{prefix}-download")
                self.continue_from = gr.Checkbox(False, label=CONTINUE_LABEL, elem_id=f"{prefix}-continue")
        # Both rows in view without scrolling inside the gallery: one column per seed, and room for two rows of
        # square thumbnails on a page up to about 1 450 px wide (Gradio 6.31 sizes thumbnails by the width; its
        # default height, 55 % of the window, cut the second row).
        self.unseen = gr.Gallery(label="Unseen seeds (never trained on): top row LoRA scale 0, bottom row scale 1",
                                 columns=EVAL_SEEDS, height=720, elem_id=f"{prefix}-unseen")
        with gr.Accordion("Apply the LoRA to a new prompt or seed (one pass)", open=True):
            with gr.Row():
                self.apply_prompt = gr.Textbox(label="Prompt", value=apply_prompt, scale=3)
                self.apply_seed = NumberBox(label="Seed", value=1, precision=0, minimum=0, maximum=MAX_SEED)
                self.apply_scale = SliderBox(0, APP_MAX_SCALE, value=1.0, step=0.1, label="LoRA scale")
            self.apply_button = gr.Button("Generate with the LoRA", elem_id=f"{prefix}-apply")
            # Made here, inside the tab: a component made later, between tabs, becomes a child of gr.Tabs, and the
            # browser then shows the next tab's button twice (Gradio 6.31).
            self.tab = gr.State(prefix)
            self.applied = gr.Image(label=f"With the LoRA ({resolution} px)", type="pil", format="png",
                                    interactive=False, height=320, elem_id=f"{prefix}-applied")

    def components(self, session: gr.State) -> dict[str, object]:
        return {name: session if name == "session" else getattr(self, name) for name in FIELDS}

    def outputs(self, session: gr.State) -> list:
        return list(self.components(session).values())

    def wire_stop(self, button: gr.Button, session: gr.State, api_name: str) -> None:
        """Stop: the run ends after its step, keeping the LoRA so far. (And the Download button follows its value.)"""
        button.click(request_stop, [session, self.tab], self.status, api_name=api_name, queue=False,
                     api_visibility="undocumented", show_progress="hidden")
        self.download.change(download_state, self.download, self.download, **LIGHT_EVENT)

    def wire_apply(self, app: App, session: gr.State, api_name: str) -> None:
        self.apply_button.click(handler(apply_lora, app), [self.apply_prompt, self.apply_seed, self.apply_scale,
                                                            session, self.tab],
                                self.applied, api_name=api_name, **GPU_EVENT)


def history_frame(history: Sequence[Step]):
    """Loss and P(expected answers) by step as a pandas DataFrame (pandas comes with gradio)."""
    return pd.DataFrame({"step": [s.step for s in history], "loss": [s.loss for s in history],
                         "p": [s.p for s in history]})


def unseen_markdown(unseen: Evaluation | None) -> str:
    """The end-of-run evaluation on unseen seeds: means, then each seed's P before and after."""
    if unseen is None or unseen.skipped:
        return f"**Unseen seeds:** not evaluated ({unseen.skipped if unseen else 'no evaluation'})."
    rows = ", ".join(f"seed {s}: {a:.2f} -> {b:.2f}" for s, a, b in zip(unseen.seeds, unseen.p_base, unseen.p_lora,
                                                                     strict=True))
    guard = ""
    if unseen.guard:
        g = unseen.guard
        spread = "" if np.isnan(g.diversity) else f", variety across seeds x{g.diversity:.2f}"
        shows = "" if g.prompt_p is None else f", P(shows the prompt) {g.prompt_p[0]:.2f} -> {g.prompt_p[1]:.2f}"
        blotches = "" if np.isnan(g.blotches) else f", blotches x{g.blotches:.2f}"
        guard = f" After / before: texture x{g.texture:.2f}{blotches}{spread}{shows}."
    return (f"**Unseen seeds** ({len(unseen.seeds)}, never trained on): mean P(expected answers) "
            f"**{unseen.mean_base:.3f}** at LoRA scale 0 -> **{unseen.mean_lora:.3f}** at scale 1 ({rows}).{guard}")


def unseen_gallery(unseen: Evaluation | None, overlay: Image.Image | np.ndarray | None,
                   resolution: int) -> list[tuple[Image.Image, str]]:
    """(image, caption) pairs for a gallery: every unseen seed at scale 0, then at scale 1, overlay on top."""
    if unseen is None or unseen.skipped:
        return []
    rows = [(unseen.images_base, unseen.p_base, "scale 0"), (unseen.images_lora, unseen.p_lora, "scale 1")]
    return [(for_display(overlaid(image, overlay, resolution), DISPLAY // 2), f"seed {seed}, {label}: P {p:.2f}")
            for images, ps, label in rows for image, p, seed in zip(images, ps, unseen.seeds, strict=True)]


def continued_lora(session: dict | None, tab: str, continue_from: bool) -> str | None:
    """The LoRA the next run of this tab starts from: the session's latest (or the one sent from 'Use a LoRA')
    when the box is ticked; refused when there is none."""
    if not continue_from:
        return None
    path = (session or {}).get("lora", {}).get(tab)
    if not path or not Path(path).is_file():
        raise ValueError("there is no LoRA to continue from yet: untick 'Continue from this LoRA', or press Optimize "
                         "once (or send a LoRA from the 'Use a LoRA' tab)")
    return path


def stream_run(app: App, tab: str, session: dict | None, request: gr.Request | None, progress, prompt: str,
               seed: int, qa: Sequence[tuple[str, str]], steps: int, overlay=None, description: str = "",
               controls: Sequence[str] | None = None, continue_from: bool = False,
               steering: dict | None = None) -> Iterator[dict[str, object]]:
    """The run behind an Optimize button as updates of the Results block (dicts keyed by FIELDS); `steering`:
    `optimize`'s views, noises and keep (absent: the preset's)."""
    init_path = continued_lora(session, tab, continue_from)
    session = session or new_session(app, request)
    session["runs"] += 1
    out_path = Path(session["dir"]) / f"{tab}-{session['runs']}-{slug(prompt)}.safetensors"
    stop_file = Path(session["dir"]) / f"stop-{tab}-{session['runs']}"
    session.setdefault("active", {})[tab] = str(stop_file)  # what this tab's Stop button touches
    try:
        yield from run_updates(app, tab, session, progress, out_path, stop_file, prompt, seed, qa, steps, overlay,
                               description, controls, init_path, steering)
    finally:
        session["active"].pop(tab, None)
        stop_file.unlink(missing_ok=True)


def run_updates(app: App, tab: str, session: dict, progress, out_path: Path, stop_file: Path, prompt: str,
                seed: int, qa: Sequence[tuple[str, str]], steps: int, overlay, description: str,
                controls: Sequence[str] | None, init_path: str | None,
                steering: dict | None = None) -> Iterator[dict[str, object]]:
    """stream_run's updates, once the session, the LoRA's path and the stop file are set."""
    history: list[Step] = []
    empty = history_frame([])
    start, last = time.monotonic(), 0.0
    asked = "\n".join(f"- {q} -> expected **{a}**" for q, a in qa)
    note = app.preset.prompt_note(prompt)
    yield {"status": "Generating the base image and asking the VLM..." + (f"\n\n_{note}_" if note else ""),
           "live": None, "loss": empty, "p": empty, "slider": None, "scores": "", "download": None, "unseen": [],
           "session": session}
    for event in gpu_run(app.preset, prompt, seed, list(qa), steps, str(out_path), overlay, description,
                         None if controls is None else list(controls), init_path, str(stop_file),
                         steering=steering):
        if event.kind == "start":
            yield {"status": f"Optimizing: step 0/{steps}. P(expected answers) before: {event.p_before:.4f}",
                   "live": for_display(event.before)}
        elif event.kind == "step":
            step = event.step
            history.append(step)
            progress((step.step, steps), desc="optimizing", unit="steps")
            now = time.monotonic()
            if step.preview is None and step.step < steps and now - last < 0.5:
                continue  # at most two plot updates a second between previews
            last = now
            frame = history_frame(history)
            stopping = " Stopping after this step..." if stop_file.exists() else ""
            update = {"status": f"Optimizing: step {step.step}/{steps}, loss {step.loss:.4f}, P {step.p:.4f}, "
                                f"{step.elapsed:.1f} s.{stopping}", "loss": frame, "p": frame}
            if step.preview is not None:
                update["live"] = for_display(step.preview)
            yield update
        elif event.stopped_at == 0:
            yield {"status": "Stopped before the first step: nothing was trained, so there is no LoRA. Press "
                             "Optimize to start again.", "session": session}
        else:
            session["lora"][tab] = event.path
            frame = history_frame(event.history)
            stopped = event.stopped_at is not None
            early = (f" (stopped at step {event.stopped_at} of {steps})" if stopped
                     else f" (stopped early: P reached {app.preset.target_p:g})" if len(event.history) < steps
                     else "")
            guard = event.unseen.guard if event.unseen else None
            warning = (f"**Warning: {guard.line()}.** Look at the unseen seeds below.\n\n"
                       if guard and guard.warnings else "")
            scores = (f"{warning}**P(expected answers)** for seed {seed}, as the VLM sees it: before "
                      f"**{event.p_before:.4f}**, after **{event.p_after:.4f}** (LoRA scale 1)\n\n{asked}\n\n"
                      f"LoRA `{Path(event.path).name}`: {len(event.history)} steps{early}"
                      f"{f' continuing `{event.parent}` ({event.total_steps} in all)' if event.parent else ''}, rank "
                      f"{app.preset.lora_rank}\n\n{unseen_markdown(event.unseen)}")
            done = (f"Stopped at step {event.stopped_at} of {steps}: the LoRA so far is saved, shown before/after "
                    "and judged on unseen seeds below" if stopped else f"Done: {len(event.history)} steps")
            yield {"status": f"{done} ({time.monotonic() - start:.1f} s, final loss {event.history[-1].loss:.4f})."
                             + (f" Warning: {guard.line()}." if warning else ""),
                   "live": for_display(overlaid(event.after, overlay, app.resolution)), "loss": frame, "p": frame,
                   "slider": (for_display(event.before), for_display(event.after)), "scores": scores,
                   "download": event.path,
                   "unseen": unseen_gallery(event.unseen, overlay, app.resolution),
                   "session": session}


def request_stop(session: dict | None, tab: str) -> str:
    """The Stop button: the tab's running job ends after its current step and keeps what it trained (see
    `runs.run`'s stop file); the run itself then shows the LoRA so far."""
    target = ((session or {}).get("active") or {}).get(tab)
    if not target:
        return "Nothing is running in this tab: press Optimize to start."
    Path(target).touch()
    return ("Stopping after this step: the LoRA so far will be saved, shown before/after and judged on unseen "
            "seeds.")


def download_state(path: str | None) -> dict:
    """The Download button enabled when it holds a file, else disabled and saying there is nothing yet (an API
    caller gets the plain path from the run; the page follows the value with this)."""
    return gr.update(label=DOWNLOAD_LABEL if path else NO_DOWNLOAD_LABEL, interactive=bool(path))


@user_errors("applying the LoRA")
def apply_lora(app: App, prompt: str, seed: float, scale: float, session: dict | None = None,
               tab: str = "visual") -> Image.Image:
    """The session's latest LoRA of this tab applied to a new prompt or seed, in one pass."""
    prompt, seed, scale = check_prompt(prompt), check_seed(seed), check_scale(scale, APP_MAX_SCALE)
    path = (session or {}).get("lora", {}).get(tab)
    if not path:
        raise ValueError("there is no LoRA in this session yet: press Optimize first "
                         "(or upload one in the 'Use a LoRA' tab)")
    return gpu_generate(app.preset, prompt, seed, path, scale)
