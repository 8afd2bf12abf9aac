"""What the tabs that optimize offer to keep the picture: the keep-prompt question and `pipelines.steering`'s
options (views, noises, the preservation weight), with their checks."""

from __future__ import annotations

import gradio as gr

from pipelines.checks import APP_MAX_NOISES, APP_MAX_VIEWS, MAX_KEEP, check_int, check_real
from pipelines.presets import Preset

from .context import SliderBox

KEEP_LABEL = ("Keep the prompt: also ask 'Does this image show {prompt}?' (a guard against the image drifting "
              "away from the prompt)")
VIEWS_LABEL = "Judged views: the VLM sees this many shifted, zoomed, blurred views of each image (0: the image)"
NOISES_LABEL = "Noises per step: the LoRA must work for this many pictures at once (slower, by as much)"
WEIGHT_LABEL = "Preservation: hold colours and texture to the base model's picture (0: off)"


class SteeringBox:
    """The options, folded under the Optimize settings; they open at the preset's values."""

    def __init__(self, preset: Preset, prefix: str):
        with gr.Accordion("Keep the picture", open=False, elem_id=f"{prefix}-steering"):
            self.views = SliderBox(0, APP_MAX_VIEWS, value=preset.views, step=1, label=VIEWS_LABEL,
                                   elem_id=f"{prefix}-views")
            self.noises = SliderBox(1, APP_MAX_NOISES, value=preset.noises, step=1, label=NOISES_LABEL,
                                    elem_id=f"{prefix}-noises")
            self.weight = SliderBox(0, MAX_KEEP, value=preset.keep, step=0.5, label=WEIGHT_LABEL,
                                    elem_id=f"{prefix}-keep-weight")

    def inputs(self) -> list:
        return [self.views, self.noises, self.weight]


def steering_options(views: float | None, noises: float | None, weight: float | None) -> dict[str, float]:
    """The page's values as `optimize`'s keyword arguments; a value not sent keeps the preset's."""
    options: dict[str, float] = {}
    if views is not None:
        options["views"] = check_int(views, "judged views", 0, APP_MAX_VIEWS)
    if noises is not None:
        options["noises"] = check_int(noises, "noises per step", 1, APP_MAX_NOISES)
    if weight is not None:
        options["keep"] = check_real(weight, "preservation weight", 0.0, MAX_KEEP)
    return options
