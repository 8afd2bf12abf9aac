"""The Ask anything tab: a prompt and your own yes/no questions (or ones the VLM drafts), then the same
optimization as Visual prompts, without an overlay."""

from __future__ import annotations

import gradio as gr

from pipelines.checks import (
    APP_MAX_QUESTIONS,
    APP_MAX_STEPS,
    MAX_SEED,
    check_int,
    check_prompt,
    check_seed,
    check_steps,
)
from pipelines.optimize import with_prompt_guard

from ..context import GPU_EVENT, App, NumberBox, SliderBox, handler
from ..gpu import gpu_draft
from ..messages import user_errors
from ..questions import parse_questions
from ..results import Results, stream_run
from ..steering import KEEP_LABEL, SteeringBox, steering_options


@user_errors("drafting questions")
def draft_questions(app: App, prompt: str, n: float) -> tuple[str, str]:
    prompt = check_prompt(prompt)
    n = check_int(n, "number of questions", 1, APP_MAX_QUESTIONS)
    questions, note = gpu_draft(app.preset, prompt, n)
    return "\n".join(f"{q} | Yes" for q in questions), note + " 'Answer with Yes or No.' is added when asked."


@user_errors("optimizing")
def ask_optimize(app: App, prompt: str, seed: float, questions: str, steps: float, keep_prompt: bool = False,
                 continue_from: bool = False, views: float | None = None, noises: float | None = None,
                 keep_weight: float | None = None, session: dict | None = None, request: gr.Request = None,
                 progress=gr.Progress()):  # noqa: B008
    prompt, seed = check_prompt(prompt), check_seed(seed)
    steps = check_steps(steps, APP_MAX_STEPS)
    steering = steering_options(views, noises, keep_weight)
    qa = parse_questions(questions)
    if keep_prompt:
        qa = with_prompt_guard(qa, prompt)
    yield from stream_run(app, "ask", session, request, progress, prompt, seed, qa, steps,
                          continue_from=bool(continue_from), steering=steering)


class AskAnythingTab:
    def __init__(self, app: App, session: gr.State):
        preset = app.preset
        with gr.Tab("Ask anything", id="ask"):
            with gr.Row():
                with gr.Column():
                    self.prompt = gr.Textbox(label="Prompt", value=preset.page_default("ask"), elem_id="ask-prompt")
                    self.seed = NumberBox(label="Seed", value=0, precision=0, minimum=0, maximum=MAX_SEED)
                    with gr.Row():
                        self.n = SliderBox(1, APP_MAX_QUESTIONS, value=4, step=1, label="Questions to draft")
                        self.draft = gr.Button("Draft questions with the VLM", elem_id="draft")
                    self.questions = gr.Textbox(
                        label="Questions: one per line, 'question | expected answer' (default Yes)", lines=5,
                        value=preset.page_default("ask_questions"),
                        elem_id="ask-questions")
                    self.note = gr.Markdown()
                    self.steps = SliderBox(1, APP_MAX_STEPS, value=preset.steps, step=1, label="Steps")
                    self.keep = gr.Checkbox(preset.keep_prompt, label=KEEP_LABEL)
                    self.steering = SteeringBox(preset, "ask")
                    with gr.Row():
                        self.button = gr.Button("Optimize", variant="primary", elem_id="ask-optimize")
                        self.stop = gr.Button("Stop", variant="stop", elem_id="ask-stop")
            self.results = Results("ask", app.resolution, apply_prompt=preset.page_default("apply"))
        self.draft.click(handler(draft_questions, app), [self.prompt, self.n], [self.questions, self.note],
                         api_name="draft_questions", **GPU_EVENT)
        results = self.results.components(session)
        self.button.click(handler(ask_optimize, app, results),
                                [self.prompt, self.seed, self.questions, self.steps, self.keep,
                                 self.results.continue_from, *self.steering.inputs(), session],
                                list(results.values()), api_name="ask_optimize",
                                show_progress_on=[self.results.status], **GPU_EVENT)
        self.results.wire_stop(self.stop, session, "ask_stop")
        self.results.wire_apply(app, session, "ask_apply_lora")
