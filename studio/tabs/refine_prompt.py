"""The Refine prompt tab: the VLM rewrites a short prompt into candidates, each is generated and judged, the best
wins (self-rewarding refinement); and a prompt written from an uploaded image."""

from __future__ import annotations

import gradio as gr

from pipelines import refine, reports
from pipelines.checks import MAX_SEED, check_int, check_prompt, check_real, check_seed

from ..controls import for_display
from ..shared import GPU_EVENT, App, ImageUpload, NumberBox, SliderBox, gpu_recreate, gpu_refine, handler, user_errors
from .score import uploaded


@user_errors("refining the prompt")
def refine_prompt(app: App, prompt: str, n: float, temperature: float, top_p: float, seed: float) -> tuple:
    prompt, seed = check_prompt(prompt), check_seed(seed)
    n = check_int(n, "number of candidates", 1, refine.MAX_CANDIDATES)
    temperature = check_real(temperature, "temperature", 0.05, 2.0)
    top_p = check_real(top_p, "top-p", 0.05, 1.0)
    rows = gpu_refine(app.name, prompt, n, temperature, top_p, seed)
    gallery = [(for_display(r.image), f"#{i} {r.combined:.2f}{' (your prompt)' if r.baseline else ''}: {r.prompt}")
               for i, r in enumerate(rows, 1)]
    choices = [f"#{i}: {r.prompt}" for i, r in enumerate(rows, 1)]
    best, base = rows[0], next(r for r in rows if r.baseline)
    note = (f"{len(rows) - 1} candidates and your prompt, all from seed {seed}, judged by the same VLM. "
            + ("**Your own prompt scored best.**" if best.baseline else
               f"Best: **{best.combined:.2f}** against **{base.combined:.2f}** for your prompt."))
    if any(r.truncated for r in rows):
        note += " Rows marked [cut] were shortened at a word boundary to fit the generator's text limit."
    return gallery, reports.table(rows), gr.update(choices=choices, value=choices[0]), note


def chosen_prompt(choice: str | None) -> str:
    """The prompt of a "#i: prompt" choice."""
    text = (choice or "").split(": ", 1)[-1].strip()
    if not text:
        raise gr.Error("there is no candidate yet: press 'Refine' first")
    return text


@user_errors("writing a prompt from the image")
def image_to_prompt(app: App, image, seed: float) -> tuple:
    image, note = uploaded(image, "Your image")
    if image is None:
        raise ValueError("there is no image: upload the picture to describe")
    candidate, closeness = gpu_recreate(app.name, image, check_seed(seed))
    text = (f"Similarity of the recreated image to yours: **{closeness:.3f}** (P(Yes) that both show the same "
            f"scene, both orders averaged).")
    if candidate.truncated:
        text += " The prompt was cut at a word boundary to fit the generator's text limit."
    return candidate.prompt, for_display(candidate.image), "\n\n".join([text, *note])


class RefinePromptTab:
    """`use` and `i2p_use` send a prompt to another tab; the page wires where (see page.py)."""

    def __init__(self, app: App):
        with gr.Tab("Refine prompt", id="refine"):
            gr.Markdown("The VLM rewrites a short prompt into candidates; each is generated from the same seed, "
                        "the same VLM judges every image, and the candidates are ranked with your prompt as the "
                        "baseline (self-rewarding refinement).")
            with gr.Row():
                with gr.Column(scale=2):
                    self.prompt = gr.Textbox(label="Short prompt", value="a cat on a windowsill",
                                             elem_id="refine-prompt")
                    with gr.Row():
                        self.n = SliderBox(1, refine.MAX_CANDIDATES, value=8, step=1, label="Candidates")
                        self.seed = NumberBox(label="Seed", value=0, precision=0, minimum=0, maximum=MAX_SEED)
                    with gr.Row():
                        self.temperature = SliderBox(0.05, 2.0, value=0.9, step=0.05, label="Temperature")
                        self.top_p = SliderBox(0.05, 1.0, value=0.9, step=0.05, label="Top-p")
                    self.button = gr.Button("Refine", variant="primary", elem_id="refine")
                    self.note = gr.Markdown(elem_id="refine-note")
                    self.choice = gr.Dropdown([], label="Candidate to use", elem_id="refine-choice")
                    self.use = gr.Button("Use this prompt in Visual prompts", elem_id="refine-use")
                with gr.Column(scale=3):
                    self.gallery = gr.Gallery(label="Candidates, best first", columns=3, height=420,
                                              elem_id="refine-gallery")
            self.table = gr.Dataframe(headers=reports.TABLE_HEADERS, interactive=False, wrap=True,
                                      label="Scores (0-5; VQAScore 0-1)", elem_id="refine-table")
            with gr.Accordion("From an image: write a prompt that recreates it", open=False):
                with gr.Row():
                    with gr.Column():
                        self.i2p_image = ImageUpload("Your image", "i2p-image")
                        self.i2p_seed = NumberBox(label="Seed", value=0, precision=0, minimum=0, maximum=MAX_SEED)
                        self.i2p_button = gr.Button("Write a prompt and recreate", elem_id="i2p")
                    with gr.Column():
                        self.i2p_prompt = gr.Textbox(label="Prompt written by the VLM", lines=3, elem_id="i2p-prompt")
                        self.i2p_result = gr.Image(label="Recreated", type="pil", format="png", interactive=False,
                                                   height=260)
                        self.i2p_note = gr.Markdown(elem_id="i2p-note")
                        self.i2p_use = gr.Button("Use this prompt in Visual prompts")
        self.button.click(handler(refine_prompt, app), [self.prompt, self.n, self.temperature, self.top_p, self.seed],
                          [self.gallery, self.table, self.choice, self.note], api_name="refine", **GPU_EVENT)
        self.i2p_button.click(handler(image_to_prompt, app), [self.i2p_image.file, self.i2p_seed],
                              [self.i2p_prompt, self.i2p_result, self.i2p_note], api_name="image_to_prompt",
                              **GPU_EVENT)
