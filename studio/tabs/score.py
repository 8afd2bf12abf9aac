"""The Score tab: the loaded VLM as a judge of one or two images (rubrics, VQAScore, an order-free A/B verdict)."""

from __future__ import annotations

import gradio as gr

from pipelines import reports
from pipelines.checks import MAX_SEED, check_prompt, check_seed
from pipelines.vlm import fit_within

from ..context import GPU_EVENT, App, NumberBox, handler
from ..gpu import gpu_generate, gpu_score
from ..messages import user_errors
from ..sessions import ImageUpload, slug, uploaded


@user_errors("generating images to score")
def score_generate(app: App, prompt: str, seed: float) -> tuple[str, str]:
    """Images for seeds s and s+1, as files in the app's folder (what the two upload fields hold)."""
    prompt, seed = check_prompt(prompt), check_seed(seed)
    paths = []
    for s in (seed, min(seed + 1, MAX_SEED)):
        path = app.root / "generated" / f"{slug(prompt)}-{s}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        gpu_generate(app.preset, prompt, s).save(path)
        paths.append(str(path))
    return paths[0], paths[1]


@user_errors("scoring")
def score(app: App, prompt: str, image_a, image_b, sampled: bool) -> str:
    """Judge one image (or compare two) against a prompt with the VLM: aesthetic, alignment and preference rubric
    scores from 0 to 5, a VQAScore P(Yes) that the image shows the prompt, and with two images which one is
    preferred; returned as a Markdown report.

    Args:
        prompt: the text the image should show, e.g. "a red apple on a wooden table".
        image_a: the image to judge (PNG or JPEG file).
        image_b: optional second image to compare with the first.
        sampled: also sample a short written critique from the VLM (slower) instead of the scores alone.
    """
    prompt = check_prompt(prompt)
    (a, note_a), (b, note_b) = uploaded(image_a, "Image A"), uploaded(image_b, "Image B")
    if a is None:
        raise ValueError("there is no image A: upload one or press 'Generate A and B'")
    images = [fit_within(im, app.resolution) for im in ([a] if b is None else [a, b])]
    found, comparison = gpu_score(app.preset, prompt, images, bool(sampled))
    titled = zip(found, ["Image A", "Image B"], strict=False)
    parts = note_a + note_b + [reports.report_markdown(r, title) for r, title in titled]
    if comparison is not None:
        parts.append(reports.comparison_markdown(comparison))
    return "\n\n".join(parts)


class ScoreTab:
    def __init__(self, app: App):
        with gr.Tab("Score", id="score"):
            gr.Markdown("The loaded VLM as a judge: aesthetics, alignment with the prompt and overall preference "
                        "on a 0-5 scale (Poor, Below Average, Average, Above Average, Very Good, Excellent), read "
                        "from its digit probabilities, and VQAScore. With two images it also says which is "
                        "better, asking with both orders so the order cannot matter.")
            with gr.Row():
                self.prompt = gr.Textbox(label="What the images should show", scale=3,
                                         value=app.preset.page_default("score"), elem_id="score-prompt")
                self.seed = NumberBox(label="Seed", value=0, precision=0, minimum=0, maximum=MAX_SEED)
                self.generate = gr.Button("Generate A and B (seeds s and s+1)", elem_id="score-generate")
            with gr.Row():
                with gr.Column():
                    self.a = ImageUpload("Image A", "score-a")
                with gr.Column():
                    self.b = ImageUpload("Image B", "score-b")
            self.sampled = gr.Checkbox(False, label="Sampled verdicts: average 3 written answers (T = 0.9) instead "
                                                    "of the digit probabilities")
            self.button = gr.Button("Score", variant="primary", elem_id="score")
            self.out = gr.Markdown(elem_id="score-result")
        self.generate.click(handler(score_generate, app), [self.prompt, self.seed], [self.a.file, self.b.file],
                            api_name="score_generate", **GPU_EVENT)
        self.button.click(handler(score, app), [self.prompt, self.a.file, self.b.file, self.sampled], self.out,
                          api_name="score", **GPU_EVENT)
