"""The Refine prompt tab: a short prompt refined in one of two modes, each result generated and judged, the best
wins; and a prompt written from an uploaded image.

- Rewrite the text (self-rewarding): the VLM rewrites the prompt into candidates (`refine.refine`).
- Through an image (PRIP): the best of K images of the prompt is the pivot, and the VLM writes prompts that render
  it, each beginning with the user's prompt (`refine.pivot`).
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from pipelines import refine, reports
from pipelines.checks import (
    APP_MAX_SELF_IMPROVE_CANDIDATES,
    APP_MAX_SELF_IMPROVE_PROMPTS,
    MAX_CANDIDATES,
    MAX_PIVOTS,
    MAX_SEED,
    check_int,
    check_pivots,
    check_prompt,
    check_real,
    check_seed,
)
from pipelines.vlm import fit_within

from ..context import GPU_EVENT, LIGHT_EVENT, App, NumberBox, SliderBox, handler
from ..controls import for_display
from ..gpu import gpu_recreate, gpu_refine, gpu_refine_pivot, gpu_self_improve
from ..messages import user_errors
from ..sessions import ImageUpload, new_session, uploaded

TEXT_MODE, PIVOT_MODE = "Rewrite the text (self-rewarding)", "Through an image (PRIP)"


def checked(prompt: str, n: float, temperature: float, top_p: float, seed: float) -> tuple[str, int, float, float, int]:
    """The inputs both modes share, checked and named as the page labels them."""
    prompt, seed = check_prompt(prompt), check_seed(seed)
    n = check_int(n, "number of candidates", 1, MAX_CANDIDATES)
    temperature = check_real(temperature, "temperature", 0.05, 2.0)
    top_p = check_real(top_p, "top-p", 0.05, 1.0)
    return prompt, n, temperature, top_p, seed


def ranked_outputs(rows: list[refine.Candidate], seed: int, table: list[list[object]], lead: str | None = None,
                   first: tuple | None = None) -> tuple:
    """Gallery, table, candidate choices and note for ranked rows (best first, the baseline among them).

    Args:
        rows: the ranked rows; the choices are theirs, the winner first.
        seed: their common seed.
        table: the score table to show (`reports.table` or `reports.pivot_table`).
        lead: a sentence put before the note; first: a (picture, caption) shown before the ranked pictures.
    """
    gallery = [*([first] if first else []),
               *[(for_display(r.image), f"#{i} {r.combined:.2f}{' (your prompt)' if r.baseline else ''}: {r.prompt}")
                 for i, r in enumerate(rows, 1)]]
    choices = [f"#{i}: {r.prompt}" for i, r in enumerate(rows, 1)]
    parts = [lead] if lead else []
    parts.append(f"{len(rows) - 1} candidates and your prompt, all from seed {seed}, judged by the same VLM.")
    parts.append(f"**{reports.winner_line(rows)}**")
    if any(r.truncated for r in rows):
        parts.append("Rows marked [cut] were shortened at a word boundary to fit the generator's text limit.")
    return gallery, table, gr.update(choices=choices, value=choices[0]), " ".join(parts)


def nothing_to_rank(exc: refine.NothingUsable) -> tuple:
    """Gallery, table, choices and note when the VLM wrote no usable prompt: the note says so in one line."""
    text = str(exc)
    return [], [], gr.update(choices=[], value=None), f"**Nothing to rank:** {text[0].lower()}{text[1:]}."


@user_errors("refining the prompt")
def refine_prompt(app: App, prompt: str, n: float, temperature: float, top_p: float, seed: float,
                  vlm_lora: str | None = None) -> tuple:
    """Rewrite a short prompt into better ones (self-rewarding): the VLM writes n distinct candidates, each is
    generated from the same seed as the user's prompt, the same VLM scores every image (aesthetic, alignment,
    preference, 0-5) and the candidates are ranked, the user's prompt as the baseline row.

    Args:
        prompt: the user's short prompt, e.g. "a cat on a sofa".
        n: how many candidates the VLM writes, 1 to 8.
        temperature: sampling temperature of the rewriter, e.g. 0.9.
        top_p: nucleus sampling of the rewriter, 0 to 1, e.g. 0.95.
        seed: the noise seed every candidate is generated from (0 to 4294967295).
    """
    prompt, n, temperature, top_p, seed = checked(prompt, n, temperature, top_p, seed)
    try:
        rows = gpu_refine(app.preset, prompt, n, temperature, top_p, seed, vlm_lora)
    except refine.NothingUsable as exc:
        return nothing_to_rank(exc)
    lead = "Written and judged by the **self-improved VLM** (this session's LoRA)." if vlm_lora else None
    return ranked_outputs(rows, seed, reports.table(rows), lead)


@user_errors("refining the prompt through an image")
def refine_pivot(app: App, prompt: str, n: float, temperature: float, top_p: float, seed: float,
                 pivots: float) -> tuple:
    """Refine a prompt through an image (PRIP, Zhan et al.): generate `pivots` images of the user's prompt, keep the
    one the VLM scores best as the pivot, let the VLM write n prompts that would render the pivot (each begins with
    the user's prompt and adds detail), then generate and rank them from the baseline's seed.

    Args:
        prompt: the user's short prompt, e.g. "a cat on a sofa".
        n: how many refined prompts the VLM writes, 1 to 8.
        temperature: sampling temperature of the writer, e.g. 0.9.
        top_p: nucleus sampling of the writer, 0 to 1, e.g. 0.95.
        seed: the seed of the baseline and the refined images; the pivots use the next seeds.
        pivots: how many images of the user's prompt compete to be the pivot, 1 to 8 (e.g. 4).
    """
    prompt, n, temperature, top_p, seed = checked(prompt, n, temperature, top_p, seed)
    pivots = check_pivots(pivots)
    try:
        result = gpu_refine_pivot(app.preset, prompt, n, temperature, top_p, seed, pivots)
    except refine.NothingUsable as exc:
        return nothing_to_rank(exc)
    p = result.pivot
    seeds = refine.pivot_seeds(seed, pivots)
    chosen = (f"the only image of your prompt (seed {p.seed})" if pivots == 1 else
              f"the best of {pivots} images of your prompt (seeds {seeds[0]} to {seeds[-1]}): seed {p.seed}")
    lead = (f"The pivot is {chosen}, scored **{p.combined:.2f}**. The VLM looked at it and wrote prompts that would "
            "render it, each beginning with your prompt (PRIP):")
    pivot_item = (for_display(p.image), f"pivot, seed {p.seed}, {p.combined:.2f}: {p.prompt}")
    return ranked_outputs(result.rows, seed, reports.pivot_table(result), lead, pivot_item)


def prompt_lines(text: str) -> list[str]:
    """The self-improve box's prompts: one per non-empty line, each checked, at most APP_MAX_SELF_IMPROVE_PROMPTS."""
    prompts = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if len(prompts) < 2:
        raise ValueError("prompts to learn from: give at least two, one per line")
    if len(prompts) > APP_MAX_SELF_IMPROVE_PROMPTS:
        raise ValueError(f"prompts to learn from: {len(prompts)} lines; at most {APP_MAX_SELF_IMPROVE_PROMPTS}")
    return [check_prompt(p) for p in prompts]


@user_errors("self-improving the VLM")
def self_improve(app: App, prompts: str, n: float, session: dict | None = None, request: gr.Request = None
                 ) -> tuple[str, dict, dict]:
    """One self-rewarding round (Yang et al. 2025) on the user's prompts: the VLM rewrites each into candidates and
    judges their images, its best and worst rewrite of each prompt become a preference pair, and DPO trains a LoRA of
    the VLM on them. Returns the before/after figures, the session, and the checkbox that lets Refine use the LoRA.

    Args:
        prompts: short prompts, one per line (2 to 16).
        n: candidates per prompt, 2 to 8.
    """
    prompts_list = prompt_lines(prompts)
    n = check_int(n, "candidates per prompt", 2, APP_MAX_SELF_IMPROVE_CANDIDATES)
    session = session or new_session(app, request)
    session["runs"] += 1
    out_dir = Path(session["dir"]) / f"self-improve-{session['runs']}"
    done = gpu_self_improve(app.preset, prompts_list, n, str(out_dir))
    session["vlm_lora"] = done.lora
    figures = "\n".join(f"- {line}" for line in done.lines()[1:])
    text = (f"**One round done** on {len(prompts_list)} prompts: {done.pairs} preference pairs, DPO loss "
            f"{done.loss[0]:.3f} -> {done.loss[1]:.3f}. The VLM's rewrites before and after the round (new samples of "
            f"the same prompts, {done.before['samples']} images each):\n\n{figures}\n\nTick **Refine with the "
            "self-improved VLM** above to let it write and judge.")
    return text, session, gr.update(interactive=True, value=True)


def active_lora(use: bool, session: dict | None) -> str | None:
    """The VLM LoRA Refine uses: the session's self-improved one while the box is ticked."""
    return (session or {}).get("vlm_lora") if use else None


def show_mode(mode: str) -> tuple:
    """The pivot count and the mode's Refine button, shown for the chosen mode."""
    pivot = mode == PIVOT_MODE
    return gr.update(visible=pivot), gr.update(visible=not pivot), gr.update(visible=pivot)


def chosen_prompt(choice: str | None) -> str:
    """The prompt of a "#i: prompt" choice."""
    text = (choice or "").split(": ", 1)[-1].strip()
    if not text:
        raise gr.Error("there is no candidate yet: press 'Refine' first")
    return text


@user_errors("writing a prompt from the image")
def image_to_prompt(app: App, image, seed: float) -> tuple:
    """Write a prompt that recreates an image: the VLM describes the picture as a prompt for the generator, the
    prompt is generated from `seed`, and the VLM says how close the recreation is (P(Yes) that both images show the
    same scene, 0 to 1). Returns the prompt, the recreated image and a note.

    Args:
        image: the picture to describe (PNG or JPEG file).
        seed: the noise seed of the recreation (0 to 4294967295).
    """
    image, note = uploaded(image, "Your image")
    if image is None:
        raise ValueError("there is no image: upload the picture to describe")
    candidate, closeness = gpu_recreate(app.preset, fit_within(image, app.resolution), check_seed(seed))
    text = (f"Similarity of the recreated image to yours: **{closeness:.3f}** (P(Yes) that both show the same "
            f"scene, both orders averaged).")
    if candidate.truncated:
        text += " The prompt was cut at a word boundary to fit the generator's text limit."
    return candidate.prompt, for_display(candidate.image), "\n\n".join([text, *note])


class RefinePromptTab:
    """`use` and `i2p_use` send a prompt to another tab; the page wires where (see page.py)."""

    def __init__(self, app: App, session: gr.State):
        with gr.Tab("Refine prompt", id="refine"):
            gr.Markdown("Two ways to refine a short prompt; each result is generated from the same seed, the same "
                        "VLM judges every image, and the candidates are ranked with your prompt as the baseline. "
                        "**Rewrite the text**: the VLM rewrites the prompt (self-rewarding refinement). **Through an "
                        "image**: the best of several images of your prompt is the pivot, and the VLM writes prompts "
                        "that would render it, each beginning with yours (PRIP, Zhan et al. 2024).")
            self.refine_inputs(app)
            self.self_improve_inputs(app)
            # The LoRA Refine uses, set while its box is ticked; made inside the tab (a component made between tabs
            # would become a child of the tab bar) and not an API parameter
            self.vlm_lora = gr.State(None)
            self.image_to_prompt_inputs()
        self.wire(app, session)

    def refine_inputs(self, app: App) -> None:
        """The prompt, the two modes' settings, the candidates' gallery and table."""
        with gr.Row():
            with gr.Column(scale=2):
                self.prompt = gr.Textbox(label="Short prompt", value=app.preset.page_default("refine"),
                                         elem_id="refine-prompt")
                self.mode = gr.Radio([TEXT_MODE, PIVOT_MODE], value=TEXT_MODE, label="Refine",
                                     elem_id="refine-mode")
                with gr.Row():
                    self.n = SliderBox(1, MAX_CANDIDATES, value=8, step=1, label="Candidates")
                    self.seed = NumberBox(label="Seed", value=0, precision=0, minimum=0, maximum=MAX_SEED)
                self.pivots = SliderBox(1, MAX_PIVOTS, value=4, step=1, label="Pivot images (one is chosen)",
                                        visible=False, elem_id="refine-pivots")
                with gr.Row():
                    self.temperature = SliderBox(0.05, 2.0, value=0.9, step=0.05, label="Temperature")
                    self.top_p = SliderBox(0.05, 1.0, value=0.9, step=0.05, label="Top-p")
                self.use_lora = gr.Checkbox(False, label="Refine with the self-improved VLM (run Self-improve "
                                                  "below first)", interactive=False, elem_id="refine-use-lora")
                self.button = gr.Button("Refine", variant="primary", elem_id="refine")
                self.pivot_button = gr.Button("Refine through an image", variant="primary", visible=False,
                                              elem_id="refine-pivot")
                self.note = gr.Markdown(elem_id="refine-note")
                self.choice = gr.Dropdown([], label="Candidate to use", elem_id="refine-choice")
                self.use = gr.Button("Use this prompt in Visual prompts", elem_id="refine-use")
            with gr.Column(scale=3):
                # Every candidate in view without scrolling inside the gallery (9 of 8 candidates: 3 rows)
                self.gallery = gr.Gallery(label="Candidates, best first", columns=3, height="auto",
                                          elem_id="refine-gallery")
        self.table = gr.Dataframe(headers=reports.TABLE_HEADERS, interactive=False, wrap=True,
                                  column_widths=["5%", "7%", "7%", "7%", "7%", "7%", "28%", "32%"],
                                  label="Scores (0-5; VQAScore 0-1)", elem_id="refine-table")

    def self_improve_inputs(self, app: App) -> None:
        with gr.Accordion("Self-improve: one self-rewarding round on your prompts", open=False):
            gr.Markdown("The VLM rewrites each prompt into candidates and judges their images; its best and worst "
                        "rewrite of each prompt become a preference pair, and DPO trains a LoRA of the VLM on them "
                        "(Yang et al. 2025). The figures compare its rewrites before and after the round.")
            with gr.Row():
                self.si_prompts = gr.Textbox(label="Prompts to learn from, one per line", lines=4, scale=3,
                                             value=app.preset.page_default("self_improve"),
                                             elem_id="self-improve-prompts")
                self.si_n = SliderBox(2, APP_MAX_SELF_IMPROVE_CANDIDATES, value=4, step=1,
                                      label="Candidates per prompt")
            self.si_button = gr.Button("Run one round", elem_id="self-improve")
            self.si_result = gr.Markdown(elem_id="self-improve-result")

    def image_to_prompt_inputs(self) -> None:
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

    def wire(self, app: App, session: gr.State) -> None:
        vlm_lora = self.vlm_lora
        self.button.click(handler(refine_prompt, app),
                          [self.prompt, self.n, self.temperature, self.top_p, self.seed, vlm_lora],
                          [self.gallery, self.table, self.choice, self.note], api_name="refine", **GPU_EVENT)
        self.si_button.click(handler(self_improve, app), [self.si_prompts, self.si_n, session],
                             [self.si_result, session, self.use_lora], api_name="self_improve", **GPU_EVENT)
        self.use_lora.change(active_lora, [self.use_lora, session], vlm_lora, **LIGHT_EVENT)
        self.pivot_button.click(handler(refine_pivot, app),
                                [self.prompt, self.n, self.temperature, self.top_p, self.seed, self.pivots],
                                [self.gallery, self.table, self.choice, self.note], api_name="refine_pivot",
                                **GPU_EVENT)
        self.mode.change(show_mode, self.mode, [self.pivots, self.button, self.pivot_button], **LIGHT_EVENT)
        self.i2p_button.click(handler(image_to_prompt, app), [self.i2p_image.file, self.i2p_seed],
                              [self.i2p_prompt, self.i2p_result, self.i2p_note], api_name="image_to_prompt",
                              **GPU_EVENT)
