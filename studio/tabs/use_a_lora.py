"""The Use a LoRA tab: upload a LoRA made earlier, read what it was trained for (our metadata, its ModelSpec keys and
thumbnail), apply it, alone or stacked with others, to any prompt and seed, or continue training it."""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr

from pipelines import lora, modelspec
from pipelines.checks import APP_MAX_SCALE, MAX_SEED, MAX_STACKED, check_prompt, check_scale, check_seed
from pipelines.lora import lora_metadata

from ..context import GPU_EVENT, App, NumberBox, SliderBox, handler
from ..gpu import gpu_generate, models
from ..messages import user_errors
from ..sessions import new_session, slug


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


def metadata_markdown(meta: dict[str, object], filename: str, spec: dict[str, str] | None = None) -> str:
    """What the file says about itself: our metadata, then its ModelSpec fields (what sharing sites show)."""
    spec = {k: v for k, v in (spec or {}).items() if k in modelspec.SHOWN}
    if not meta:
        lines = [f"**{filename}**: no dual-process metadata (a LoRA from elsewhere?)."]
    else:
        total = meta.get("total_steps", meta.get("steps", "?"))
        continued = f" ({total} in all, continuing another LoRA)" if meta.get("parent_sha256") else ""
        lines = [f"**{filename}**: preset `{meta.get('preset', '?')}`, {meta.get('steps', '?')} steps{continued}, "
                 f"rank {meta.get('rank', '?')}, alpha {meta.get('alpha', '?')}",
                 f"- prompt: {meta.get('prompt', '')!r}"]
        for q, a in meta.get("questions") or []:
            lines.append(f"- {q} -> **{a}**")
        for control in meta.get("controls") or ([meta["overlay"]] if meta.get("overlay") else []):
            lines.append(f"- visual prompt: {control}")
    if spec:
        lines.append("\n**ModelSpec** (read by LoRA tools and sharing sites):")
        lines += [f"- {key}: {str(spec[key])[:300]}" for key in modelspec.SHOWN if key in spec]
    return "\n".join(lines)


def file_spec(path: Path) -> dict[str, str]:
    return modelspec.read(lora.read_lora(path)[1])


def checked_upload(app: App, file: str | None) -> tuple[Path, dict]:
    """An uploaded LoRA that this app's model can take: readable, small enough, made for this preset, and every
    weight the shape of the layer it adapts (checked before anything is loaded into the shared pipeline)."""
    path = check_upload(file, app.max_upload_bytes)
    meta = lora_metadata(path)
    check_preset_match(meta, app.name, path.name)
    lora.check_lora_fits(path, models(app.preset)[0].transformer, app.name, name=path.name)
    return path, meta


@user_errors("reading the LoRA file")
def upload_lora(app: App, file: str | None) -> tuple:
    """Read an uploaded LoRA file: its dual-process metadata, its ModelSpec fields and its thumbnail."""
    path, meta = checked_upload(app, file)
    spec = file_spec(path)
    thumbnail = modelspec.thumbnail_image(spec.get("thumbnail", ""))
    return meta, metadata_markdown(meta, path.name, spec), thumbnail


def stacked_scales(files: list | None, scales: str | None) -> list[float]:
    """One scale per stacked LoRA from the scales box ('0.7 0.5' or '0.7, 0.5'); empty: 1.0 each."""
    files = files or []
    words = (scales or "").replace(",", " ").split()
    if not words:
        return [1.0] * len(files)
    try:
        values = [float(w) for w in words]
    except ValueError:
        raise ValueError(f"stacked LoRA scales {scales!r} must be numbers, e.g. 0.7 0.5") from None
    if len(values) != len(files):
        raise ValueError(f"{len(values)} stacked LoRA scales for {len(files)} stacked LoRA files")
    return [check_scale(v, APP_MAX_SCALE) for v in values]


@user_errors("applying the uploaded LoRA")
def apply_uploaded(app: App, file: str | None, prompt: str, seed: float, scale: float, more: list | None = None,
                   more_scales: str | None = "") -> tuple:
    """Generate `prompt` from `seed` with the uploaded LoRA at `scale`, and any stacked LoRAs at their own scales.

    Args:
        file: the LoRA (.safetensors) made by this app or pipelines.optimize for the preset running here.
        prompt: what to generate; seed: the noise seed (0 to 4294967295); scale: the LoRA's strength (0 to 5).
        more: further LoRA files applied together with the first (stacked); more_scales: their scales, e.g. "0.7".
    """
    path, meta = checked_upload(app, file)
    prompt, seed, scale = check_prompt(prompt), check_seed(seed), check_scale(scale, APP_MAX_SCALE)
    more = [m for m in more or [] if m]
    if len(more) > MAX_STACKED:
        raise ValueError(f"{len(more)} stacked LoRA files; at most {MAX_STACKED} on top of the first")
    stack = [(str(checked_upload(app, m)[0]), s) for m, s in zip(more, stacked_scales(more, more_scales),
                                                                   strict=True)]
    image = gpu_generate(app.preset, prompt, seed, str(path), scale, stack)
    note = "".join(f"\n\nStacked: `{Path(p).name}` at scale {s:g}" for p, s in stack)
    if prompt_note := app.preset.prompt_note(prompt):
        note += f"\n\n_{prompt_note}_"
    return image, metadata_markdown(meta, path.name, file_spec(path)) + note


@user_errors("continuing from the LoRA")
def continue_from_upload(app: App, file: str | None, session: dict | None = None,
                         request: gr.Request = None) -> tuple[dict, str]:
    """Make the uploaded LoRA the starting point of the next Visual prompts run (its box gets ticked)."""
    path, meta = checked_upload(app, file)
    session = session or new_session(app, request)
    target = Path(session["dir"]) / f"continue-{slug(path.stem)}.safetensors"
    shutil.copyfile(path, target)  # the upload's temporary file may go; the session's folder stays
    session["lora"]["visual"] = str(target)
    steps = meta.get("total_steps", meta.get("steps", "?"))
    return session, (f"The next **Optimize** in Visual prompts continues from `{path.name}` ({steps} steps behind "
                     "it; same rank and targets, AdamW starts afresh).")


class UseALoraTab:
    """The tab's components and events; `continue_button` is wired by the page (it opens Visual prompts)."""

    def __init__(self, app: App, session: gr.State):
        with gr.Tab("Use a LoRA", id="lora"):
            gr.Markdown(f"Upload a LoRA made earlier by this app or `pipelines.optimize` for preset `{app.name}` "
                        f"(.safetensors, at most {app.max_upload_bytes / 2**20:g} MB) and apply it.")
            with gr.Row():
                with gr.Column():
                    self.file = gr.File(label="LoRA file", file_types=[".safetensors"], type="filepath",
                                        elem_id="lora-file")
                    self.info = gr.Markdown(elem_id="lora-info")
                    self.thumbnail = gr.Image(label="Thumbnail (from the file's ModelSpec)", type="pil", format="png",
                                              interactive=False, height=160, elem_id="lora-thumbnail")
                    self.meta = gr.JSON(label="Metadata")
                    self.continue_button = gr.Button("Continue training from this LoRA (in Visual prompts)",
                                                     elem_id="lora-continue")
                with gr.Column():
                    self.prompt = gr.Textbox(label="Prompt", value=app.preset.page_default("lora"))
                    with gr.Row():
                        self.seed = NumberBox(label="Seed", value=0, precision=0, minimum=0, maximum=MAX_SEED)
                        self.scale = SliderBox(0, APP_MAX_SCALE, value=1.0, step=0.1, label="LoRA scale")
                    with gr.Accordion("Stack more LoRAs (applied together, each at its own scale)", open=False):
                        self.more = gr.File(label="More LoRA files", file_types=[".safetensors"], type="filepath",
                                            file_count="multiple", elem_id="lora-more")
                        self.more_scales = gr.Textbox(label="Their scales, one per file (e.g. 0.7 0.5; empty: 1 each)",
                                                      value="", elem_id="lora-more-scales")
                    self.button = gr.Button("Generate with the LoRA", variant="primary")
                    self.image = gr.Image(label="With the LoRA", type="pil", format="png", interactive=False,
                                          height=320)
        self.file.upload(handler(upload_lora, app), self.file, [self.meta, self.info, self.thumbnail],
                         api_name="upload_lora")
        self.button.click(handler(apply_uploaded, app), [self.file, self.prompt, self.seed, self.scale, self.more,
                                                         self.more_scales],
                          [self.image, self.info], api_name="apply_uploaded", **GPU_EVENT)
        self.continued = self.continue_button.click(handler(continue_from_upload, app), [self.file, session],
                                                    [session, self.info], api_name="continue_lora", queue=False)
