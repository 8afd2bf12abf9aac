"""The Use a LoRA tab: upload a LoRA made earlier, read what it was trained for, apply it to any prompt and seed."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from pipelines import lora
from pipelines.checks import APP_MAX_SCALE, MAX_SEED, check_prompt, check_scale, check_seed
from pipelines.lora import lora_metadata

from ..shared import GPU_EVENT, App, NumberBox, SliderBox, gpu_generate, handler, models, user_errors


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


def checked_upload(app: App, file: str | None) -> tuple[Path, dict]:
    """An uploaded LoRA that this app's model can take: readable, small enough, made for this preset, and every
    weight the shape of the layer it adapts (checked before anything is loaded into the shared pipeline)."""
    path = check_upload(file, app.max_upload_bytes)
    meta = lora_metadata(path)
    check_preset_match(meta, app.name, path.name)
    lora.check_lora_fits(path, models(app.name)[0].transformer, app.name, name=path.name)
    return path, meta


@user_errors("reading the LoRA file")
def upload_lora(app: App, file: str | None) -> tuple[dict, str]:
    path, meta = checked_upload(app, file)
    return meta, metadata_markdown(meta, path.name)


@user_errors("applying the uploaded LoRA")
def apply_uploaded(app: App, file: str | None, prompt: str, seed: float, scale: float) -> tuple:
    path, meta = checked_upload(app, file)
    prompt, seed, scale = check_prompt(prompt), check_seed(seed), check_scale(scale, APP_MAX_SCALE)
    return gpu_generate(app.name, prompt, seed, str(path), scale), metadata_markdown(meta, path.name)


class UseALoraTab:
    def __init__(self, app: App):
        with gr.Tab("Use a LoRA", id="lora"):
            gr.Markdown(f"Upload a LoRA made earlier by this app or `pipelines.optimize` for preset `{app.name}` "
                        f"(.safetensors, at most {app.max_upload_bytes / 2**20:g} MB) and apply it.")
            with gr.Row():
                with gr.Column():
                    self.file = gr.File(label="LoRA file", file_types=[".safetensors"], type="filepath",
                                        elem_id="lora-file")
                    self.info = gr.Markdown()
                    self.meta = gr.JSON(label="Metadata")
                with gr.Column():
                    self.prompt = gr.Textbox(label="Prompt", value="a lighthouse on a cliff")
                    with gr.Row():
                        self.seed = NumberBox(label="Seed", value=0, precision=0, minimum=0, maximum=MAX_SEED)
                        self.scale = SliderBox(0, APP_MAX_SCALE, value=1.0, step=0.1, label="LoRA scale")
                    self.button = gr.Button("Generate with the LoRA", variant="primary")
                    self.image = gr.Image(label="With the LoRA", type="pil", format="png", interactive=False,
                                          height=320)
        self.file.upload(handler(upload_lora, app), self.file, [self.meta, self.info], api_name="upload_lora")
        self.button.click(handler(apply_uploaded, app), [self.file, self.prompt, self.seed, self.scale],
                          [self.image, self.info], api_name="apply_uploaded", **GPU_EVENT)
