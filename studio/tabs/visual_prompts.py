"""The Visual prompts tab: a base image, a control drawn on the canvas or set with its settings, the overlay the VLM
sees, the optimization, and the precomputed examples.

Which controls exist, their settings and what is drawn for them come from the registry (`overlays.CONTROLS`):
the tab builds a group of components per control from its `settings` and names none of them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import gradio as gr

import overlays
from overlays import palette
from overlays.base import Input, MissingValues
from overlays.build import build
from overlays.colors import parse_colors, to_hex
from pipelines.checks import (
    APP_MAX_STEPS,
    MAX_SEED,
    MAX_SWATCHES,
    MIN_SWATCHES,
    check_int,
    check_prompt,
    check_seed,
    check_steps,
)
from pipelines.optimize import with_prompt_guard
from pipelines.steering import held

from ..context import GPU_EVENT, LIGHT_EVENT, App, NumberBox, SliderBox, as_sent, handler, keyed_by_component
from ..controls import DISPLAY, checkerboard, default_questions, editor_value, for_display, overlaid
from ..examples import load_examples
from ..gpu import gpu_generate
from ..messages import user_errors
from ..questions import format_questions, parse_questions
from ..results import Results, stream_run
from ..sessions import IMAGE_TYPES, read_upload
from ..steering import KEEP_LABEL, SteeringBox, steering_options

COMBINE_LABEL = ("Combine with (each set with its own settings below; the canvas is the Control's: a combined horizon "
                 "takes its height, combined depth its points). The marks must not overlap: a palette strip and a "
                 "line-weight stroke are stacked at the bottom")
START_CONTROL = "horizon"


def setting_keys() -> list[str]:
    """Every registered control's setting keys, in registry order: the settings parameters of this tab's events."""
    return [s.key for c in overlays.CONTROLS.values() for s in c.settings]


def setting_defaults() -> dict[str, object]:
    return {s.key: s.default for c in overlays.CONTROLS.values() for s in c.settings}


# ---------- handlers: plain arguments in, plain values out ---------------------------------------------------------


@user_errors("generating the base image")
def generate_base(app: App, prompt: str, seed: float) -> dict[str, object]:
    """Generate one image of a prompt with the base text-to-image model (no LoRA): the base image a visual prompt
    is drawn on. Returns the image, the canvas value with it as background, and a note.

    Args:
        prompt: what to generate, e.g. "a tropical beach at sunset".
        seed: the noise seed, 0 to 4294967295 (the same seed gives the same image).
    """
    prompt, seed = check_prompt(prompt), check_seed(seed)
    image = gpu_generate(app.preset, prompt, seed)
    note = app.preset.prompt_note(prompt)
    return {"base": image, "editor": editor_value(image),
            "base_note": f"Base image for seed {seed}: draw on it on the right." + (f"\n\n_{note}_" if note else "")}


def built(app: App, control: str, drawing: object, questions_box: str | None, settings: dict,
          combine: list[str] | None = None):
    """The control (and those combined with it) from the page's inputs; a control that asks the user's own
    questions reads the box."""
    own = []
    if any(overlays.CONTROLS.get(c) is not None and overlays.CONTROLS[c].uses_questions
           for c in [control, *(combine or [])]):
        box = (questions_box or "").strip()
        own = [q for q, _ in parse_questions(box)] if box else []
    names = [control, *(n for n in combine or [] if n != control)]
    return build(names, app.resolution, settings, drawing=drawing, questions=own)


def asked(ctrl, questions_box: str | None) -> list[tuple[str, str]]:
    """The questions box's questions (they replace the Control's own), plus every combined control's."""
    box = (questions_box or "").strip()
    if not box:
        return ctrl.questions
    own = parse_questions(box)
    return own + [qa for qa in ctrl.added if qa not in own]


def groups_shown(control: str, combine: list[str] | None) -> list:
    """One visibility update per control's settings group: the Control's and the combined ones'."""
    return [gr.update(visible=bool(entry.settings) and (name == control or name in (combine or [])))
            for name, entry in overlays.CONTROLS.items()]


def preview(app: App, base, control: str, drawing, questions: str | None, settings: dict,
            combine: list[str] | None = None) -> tuple:
    """The overlay on the base image at the generator's resolution, and the exact questions. Never raises for bad
    input: the problem is shown in the note (this runs on every edit)."""
    res = app.resolution
    try:
        ctrl = built(app, control, drawing, questions, settings, combine)
    except MissingValues as exc:  # nothing drawn or typed yet: what to do, not an error
        return for_display(overlaid(base, None, res)), f"_Nothing to show yet: {exc}._"
    except ValueError as exc:
        return for_display(overlaid(base, None, res)), f"**Overlay:** {exc}"
    try:
        qa = asked(ctrl, questions)
        lines = "\n".join(f"{i}. {q} -> expected **{a}**" for i, (q, a) in enumerate(qa, 1))
    except ValueError as exc:
        lines = f"**Questions:** {exc}"
    notes = "".join(f"\n\n_{n}_" for n in ctrl.notes)
    text = f"**The VLM sees this** ({res}x{res} px; {ctrl.description}) and is asked:\n\n{lines}{notes}"
    return for_display(overlaid(base, ctrl.overlay, res)), text


def landing_note(app: App, base, control: str, drawing, questions: str | None, settings: dict,
                 combine: list[str] | None = None) -> str:
    """`preview`'s note alone: what the page shows when it loads."""
    return preview(app, base, control, drawing, questions, settings, combine)[1]


def canvas_hint(app: App, control: str) -> str:
    entry = overlays.CONTROLS[control]
    if entry.drawn and entry.settings:
        hint = (f"**Draw {entry.drawn}** on the canvas (red brush), or use the settings on the left; a drawing "
                "wins.")
    elif entry.drawn:
        hint = f"**Draw {entry.drawn}** on the canvas (red brush)."
    else:
        hint = f"The {control} control is set with the inputs on the left; the canvas is not used."
    untrained = app.preset.control_note(control)
    return hint + (f"\n\n_{untrained}_" if untrained else "")


def questions_for(app: App, control: str, settings: dict) -> str:
    return format_questions(default_questions(control, settings))


def on_control(app: App, control: str, base, settings: dict, combine: list[str] | None = None) -> dict[str, object]:
    """A new control: its settings shown, its questions in the box, a fresh canvas, its hint."""
    return {"groups": groups_shown(control, combine),
            "questions": questions_for(app, control, settings),
            "editor": editor_value(base or checkerboard(app.resolution)), "hint": canvas_hint(app, control)}


@user_errors("optimizing")
def optimize(app: App, prompt: str, seed: float, control: str, canvas, questions: str | None, steps: float,
             settings: dict, keep_prompt: bool = False, combine: list[str] | None = None, continue_from: bool = False,
             views: float | None = None, noises: float | None = None, keep_weight: float | None = None,
             session: dict | None = None, request: gr.Request = None, progress=gr.Progress()):  # noqa: B008
    """Train a LoRA so the VLM answers the visual prompt's questions as expected; streams progress, then the
    before/after images, the scores and the LoRA file.

    Args:
        prompt: what to generate, e.g. "a tropical beach at sunset".
        seed: the noise seed of the before/after image (0 to 4294967295).
        control: the visual prompt read from the canvas: palette, horizon, line-weight, depth or composition.
        canvas: the canvas (an ImageEditor value: background and a drawn RGBA layer) with the control drawn in red.
        questions: Yes/No questions, one per line as 'question | expected answer' (empty: the control's own).
        steps: optimization steps (about 100 for a visible change).
        keep_prompt: also ask 'Does this image show {prompt}?' (a guard against drift).
        combine: other controls drawn into the same overlay from their settings, e.g. ["palette"].
        continue_from: start from this session's latest LoRA instead of from zero.
        views, noises, keep_weight: what keeps the picture (`pipelines.steering`): judged views per image, noises
            per step, the preservation weight (not sent: the preset's).
    """
    prompt, seed = check_prompt(prompt), check_seed(seed)
    steps = check_steps(steps, APP_MAX_STEPS)
    ctrl = built(app, control, canvas, questions, settings, combine)
    changed = [overlays.CONTROLS[name].changes for name in [control, *(combine or [])]]
    steering = steering_options(views, noises, keep_weight) | {"hold": held(changed)}
    qa = asked(ctrl, questions)
    if keep_prompt:
        qa = with_prompt_guard(qa, prompt)
    yield from stream_run(app, "visual", session, request, progress, prompt, seed, qa, steps, ctrl.overlay,
                          ctrl.description, ctrl.controls, bool(continue_from), steering)


@user_errors("reading the palette")
def palette_from_image(image, n: float) -> str:
    """The dominant colours of the base image, or of an uploaded picture (a file opened under our limits)."""
    if image is None:
        raise ValueError("there is no base image yet: press 'Generate base image' first")
    if isinstance(image, (str, Path)):
        image = read_upload(image, "the picture")
    n = check_int(n, "number of colours", MIN_SWATCHES, MAX_SWATCHES)
    return " ".join(to_hex(c) for c in palette.extract_palette(image, n))


@user_errors("adding a swatch")
def add_swatch(colors: str | None, swatch: str) -> str:
    current = [to_hex(c) for c in parse_colors(colors)] if (colors or "").strip() else []
    if len(current) >= MAX_SWATCHES:
        raise ValueError(f"the palette already has {len(current)} swatches; at most {MAX_SWATCHES}")
    return " ".join(current + [to_hex(c) for c in parse_colors(swatch)])


def preset_colors(name: str) -> str:
    """A palette preset's colours for the swatches box."""
    return " ".join(palette.load_presets()[name])


def with_settings(fn: Callable, app: App, before: int, outputs: dict | None = None) -> Callable:
    """`fn(app, <before args>, settings: dict, ...)` as an event function with one parameter per setting key in
    place of `settings`, so Gradio passes the settings' components positionally and the API names each."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    head, tail = params[:before], params[before + 1:]
    keys, defaults = setting_keys(), setting_defaults()
    middle = [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults[k]) for k in keys]
    signature = inspect.Signature(head + middle + [p.replace(annotation=inspect.Parameter.empty) for p in tail])

    def call(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        return fn(app, *[a[p.name] for p in head], {k: a[k] for k in keys}, *[a[p.name] for p in tail])

    wrapper = keyed_by_component(call, inspect.isgeneratorfunction(getattr(fn, "__wrapped__", fn)), outputs)
    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__  # the doc describes the endpoint (API, MCP)
    wrapper.__signature__ = signature
    # Gradio finds the request and progress parameters by annotation and default.
    wrapper.__annotations__ = {p.name: gr.Request for p in tail if p.name == "request"}
    return wrapper


def example_warning(example: dict) -> str:
    """The guard's warning about a precomputed example's unseen seeds, as the page shows it after a run."""
    guard = (example.get("unseen_seeds") or {}).get("guard") or {}
    if not guard.get("warnings"):
        return ""
    return f"\n\n**Warning: the judge may be fooled: {'; '.join(guard['warnings'])}.**"


# ---------- the tab ----------------------------------------------------------------------------------------------


def setting_component(setting: Input, resolution: int, palettes: dict[str, list[str]]):
    """A component for one setting, by its kind (the "colors" kind brings the palette editor's extras); its hint is
    the box's note."""
    kind, label, default, info = setting.kind, setting.label, setting.default, setting.hint or None
    elem_id = setting.key.replace("_", "-")
    if kind == "colors":
        return gr.Textbox(label=label, value=default, elem_id=elem_id, info=info)
    if kind == "slider":
        top = setting.max_for(resolution)
        return SliderBox(setting.minimum, top, value=min(default, top), step=1, label=f"{label} ({resolution} px)",
                         elem_id=elem_id)
    if kind == "dropdown":
        return gr.Dropdown(list(setting.choices), value=default, label=label)
    if kind == "checkbox":
        return gr.Checkbox(bool(default), label=label)
    if kind == "radio":
        return gr.Radio(list(setting.choices), value=default, label=label, info=info)
    if kind == "number":
        # A text box, as sent: it may stay empty (a number box shows and sends 0 for "no value", which would read
        # as a bad height on the landing page); the Spec's check names an out-of-range value.
        empty = "empty: " + ("drawn on the canvas" if setting.default is None else f"{setting.default:g}")
        return as_sent(gr.Textbox(value="" if default is None else f"{default:g}", label=label, elem_id=elem_id,
                                  placeholder=f"{setting.minimum:g} to {setting.max_for(resolution):g} ({empty})"))
    if kind == "point":
        return gr.Textbox(value=default or "", label=label, placeholder=setting.hint or "e.g. 0.3, 0.6",
                          elem_id=elem_id)
    if kind == "image":
        return gr.File(label=label, file_types=IMAGE_TYPES, type="filepath", elem_id=elem_id)
    raise ValueError(f"setting kind {kind!r} is not one the app can show")


class VisualPromptsTab:
    """Builds the tab's components and wires its events; `prompt` is where other tabs send a prompt."""

    def __init__(self, app: App, session: gr.State):
        self.app, self.session = app, session
        preset, res = app.preset, app.resolution
        palettes = palette.load_presets()
        self.settings: dict[str, object] = {}
        self.groups = []
        self.palette_extras = []
        with gr.Tab("Visual prompts", id="visual"):
            with gr.Row():
                with gr.Column(scale=2):
                    self.prompt = gr.Textbox(label="Prompt", value=preset.page_default("visual"), elem_id="prompt")
                    with gr.Row():
                        self.seed = NumberBox(label="Seed", value=0, precision=0, minimum=0, maximum=MAX_SEED,
                                              elem_id="seed")
                        self.gen_button = gr.Button("Generate base image", elem_id="generate")
                    self.base = gr.Image(label=f"Base image ({res} px)", type="pil", format="png",
                                         interactive=False, height=180, elem_id="base")
                    self.base_note = gr.Markdown()
                    self.control = gr.Radio(list(overlays.CONTROLS), value=START_CONTROL, label="Control",
                                            elem_id="control")
                    self.combine = gr.CheckboxGroup(list(overlays.CONTROLS), value=[], label=COMBINE_LABEL,
                                                    elem_id="combine")
                    for name, entry in overlays.CONTROLS.items():
                        with gr.Group(visible=name == START_CONTROL and bool(entry.settings)) as group:
                            for setting in entry.settings:
                                self.settings[setting.key] = setting_component(setting, res, palettes)
                                if setting.kind == "colors":
                                    self.palette_extras.append((self.settings[setting.key], self.colors_editor(
                                        palettes)))
                        self.groups.append(group)
                    self.questions = gr.Textbox(
                        label="Questions for the VLM: one per line, 'question | expected answer'",
                        value=format_questions(default_questions(START_CONTROL)), lines=3, elem_id="questions")
                    self.steps = SliderBox(1, APP_MAX_STEPS, value=preset.steps, step=1, label="Steps",
                                           elem_id="steps")
                    self.keep = gr.Checkbox(preset.keep_prompt, label=KEEP_LABEL, elem_id="keep-prompt")
                    self.steering = SteeringBox(preset, "visual")
                    with gr.Row():
                        self.opt_button = gr.Button("Optimize", variant="primary", elem_id="optimize")
                        self.stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
                with gr.Column(scale=3):
                    self.hint = gr.Markdown(canvas_hint(app, START_CONTROL), elem_id="canvas-hint")
                    self.editor = gr.ImageEditor(
                        value=editor_value(checkerboard(res)), type="numpy", image_mode="RGBA", label="Canvas",
                        canvas_size=(DISPLAY, DISPLAY), fixed_canvas=True, sources=(), transforms=(),
                        brush=gr.Brush(colors=["#ff0000"], default_size=10, color_mode="fixed"),
                        layers=gr.LayerOptions(layers=["drawing"], allow_additional_layers=False),
                        format="png", height=600, elem_id="canvas")
                    self.overlay_view = gr.Image(for_display(overlaid(None, None, res)), label="What the VLM sees",
                                                 type="pil", format="png", interactive=False, height=320,
                                                 elem_id="preview")
                    self.overlay_note = gr.Markdown(elem_id="preview-note")
            self.results = Results("visual", res, apply_prompt=preset.page_default("apply"))
            self.examples()
        self.wire()

    def colors_editor(self, palettes: dict[str, list[str]]) -> dict[str, object]:
        """A palette editor around a colours text box: presets, a colour picker, from the base image or a picture."""
        extras = {"preset": gr.Dropdown(sorted(palettes), value="retro", label="Palette preset")}
        with gr.Row():
            extras["swatch"] = gr.ColorPicker(value="#2a9d8f", label="Colour")
            extras["add"] = gr.Button("Add swatch", size="sm")
            extras["n"] = NumberBox(value=5, precision=0, minimum=2, maximum=8, label="Colours")
            extras["from_base"] = gr.Button("Take from base image", size="sm")
        extras["picture"] = gr.File(label="Or take the colours of a picture", file_types=IMAGE_TYPES,
                                    type="filepath", elem_id="palette-image")
        return extras

    def examples(self) -> None:
        examples = load_examples()
        if not examples:
            return
        other = examples["preset"] != self.app.name
        gr.Markdown(f"### Examples\nComputed ahead with preset `{examples['preset']}` ({examples['steps']} steps)"
                    + (", not the preset running here" if other else "")
                    + (": random weights, so noise" if examples["preset"].startswith("tiny") else "")
                    + ". Click one to load its settings and its before/after without running it.")
        keys, defaults = setting_keys(), setting_defaults()
        rows, labels = [], []
        for ex in examples["examples"]:
            qtext = format_questions([tuple(q) for q in ex["questions"]])
            values = defaults | ex["params"]
            if ex.get("reference"):
                values["composition_reference"] = ex["reference"]
            drawing = {"background": ex["canvas"], "layers": [ex["drawing"]] if ex.get("drawing") else [],
                       "composite": None}
            rows.append([ex["prompt"], ex["seed"], ex["control"], ex["before"], drawing, qtext,
                         *[values.get(k) for k in keys], (ex["before"], ex["after"]),
                         f"**Precomputed** with `{examples['preset']}`: P(expected answers) before "
                         f"**{ex['p_before']:.4f}**, after **{ex['p_after']:.4f}**{example_warning(ex)}\n\n"
                         + format_questions([tuple(q) for q in ex.get("asked", ex["questions"])])
                         + ("" if other else f"\n\n_{self.app.preset.control_note(ex['control']) or ''}_")])
            labels.append(f"{ex['control']}: {ex['prompt']}")
        gr.Examples(rows, inputs=[self.prompt, self.seed, self.control, self.base, self.editor, self.questions,
                                  *[self.settings[k] for k in keys], self.results.slider, self.results.scores],
                    outputs=[*self.groups, self.hint, self.combine], fn=self.on_example, run_on_click=True,
                    cache_examples=False,
                    example_labels=labels, label="Precomputed examples", api_visibility="private")

    def on_example(self, *values):
        control = values[2]
        return [*groups_shown(control, []), canvas_hint(self.app, control), []]

    def wire_settings(self, show: dict, settings: list) -> None:
        """Every control's settings, the questions box and the palette editor's buttons refresh the preview."""
        app, s = self.app, self.settings
        for entry in overlays.CONTROLS.values():
            for setting in entry.settings:
                component = s[setting.key]
                if setting.sets_questions:
                    component.input(with_settings(questions_for, app, 1), [self.control, *settings],
                                    self.questions, **LIGHT_EVENT).then(**show, **LIGHT_EVENT)
                elif setting.kind == "colors":
                    component.blur(**show, **LIGHT_EVENT)
                    component.submit(**show, **LIGHT_EVENT)
                else:
                    component.change(**show, **LIGHT_EVENT)
        self.editor.change(**show, **LIGHT_EVENT)  # values set by the server or an example
        self.base.change(**show, **LIGHT_EVENT)
        self.questions.change(**show, **LIGHT_EVENT)
        for colors, extras in self.palette_extras:
            extras["preset"].input(preset_colors, extras["preset"], colors,
                                   **LIGHT_EVENT).then(**show, **LIGHT_EVENT)
            extras["add"].click(add_swatch, [colors, extras["swatch"]], colors, **LIGHT_EVENT).then(
                **show, **LIGHT_EVENT)
            extras["from_base"].click(palette_from_image, [self.base, extras["n"]], colors, **LIGHT_EVENT).then(
                **show, **LIGHT_EVENT)
            extras["picture"].upload(palette_from_image, [extras["picture"], extras["n"]], colors,
                                     **LIGHT_EVENT).then(**show, **LIGHT_EVENT)

    def wire(self) -> None:
        app, s = self.app, self.settings
        settings = [s[k] for k in setting_keys()]
        show = dict(fn=with_settings(preview, app, 4), inputs=[self.base, self.control, self.editor, self.questions,
                                                                *settings, self.combine],
                    outputs=[self.overlay_view, self.overlay_note])
        # the user's strokes; registered first so that this event is the one named /preview
        self.editor.input(**show, api_name="preview", queue=False, show_progress="hidden")
        # When the page loads it refreshes the note only. Its image would be the canvas's own background, the same
        # bytes and so the same file in Gradio's cache, which Gradio rewrites in place while the new page is still
        # fetching it: a truncated image and an ASGI traceback ("Too little data for declared Content-Length"),
        # most often on a reload while a run keeps the CPU busy.
        self.landing = dict(fn=with_settings(landing_note, app, 4), inputs=show["inputs"],
                            outputs=[self.overlay_note])
        base_out = {"base": self.base, "editor": self.editor, "base_note": self.base_note}
        gen = handler(generate_base, app, base_out)
        self.gen_button.click(gen, [self.prompt, self.seed], list(base_out.values()), api_name="generate",
                              **GPU_EVENT)
        self.prompt.submit(gen, [self.prompt, self.seed], list(base_out.values()), api_visibility="private",
                           **GPU_EVENT)
        control_out = {"questions": self.questions, "editor": self.editor, "hint": self.hint}
        change = with_settings(on_control, app, 2)

        def on_control_event(*args):
            update = change(*args)
            return [*update["groups"], update["questions"], update["editor"], update["hint"]]

        self.control.input(on_control_event, [self.control, self.base, *settings, self.combine],
                           [*self.groups, *control_out.values()], **LIGHT_EVENT).then(**show, **LIGHT_EVENT)
        self.combine.input(groups_shown, [self.control, self.combine], self.groups, **LIGHT_EVENT).then(
            **show, **LIGHT_EVENT)
        self.wire_settings(show, settings)
        results = self.results.components(self.session)
        self.opt_button.click(
            with_settings(optimize, app, 6, results),
            [self.prompt, self.seed, self.control, self.editor, self.questions, self.steps, *settings, self.keep,
             self.combine, self.results.continue_from, *self.steering.inputs(), self.session],
            list(results.values()), api_name="optimize",
            show_progress_on=[self.results.status],
            **GPU_EVENT)
        self.results.wire_stop(self.stop_button, self.session, "stop")
        self.results.wire_apply(app, self.session, "apply_lora")
