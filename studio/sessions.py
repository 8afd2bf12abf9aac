"""Per-user state and uploads: a folder per browser session for its files, and uploaded images opened by us under
our own limits (checks.read_image), so a bad file gets one line naming the field."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import gradio as gr
from PIL import Image

from pipelines.checks import fit_upload, read_image

from .context import LIGHT_EVENT, App
from .messages import user_errors

# ---------- uploads: files we open ourselves ----------------------------------------------------------------------

# No file_types filter: Gradio would refuse other files with its own message; we read the contents instead.
IMAGE_TYPES = None


class ImageUpload:
    """An image upload as a file (Gradio does not decode it: we do, under our own limits, so a bad file gets our
    one-line message naming the field) and a preview of what was read."""

    def __init__(self, label: str, elem_id: str, height: int = 260):
        self.label = label
        self.file = gr.File(label=label, file_types=IMAGE_TYPES, type="filepath", elem_id=elem_id)
        self.view = gr.Image(label=f"{label} (as read)", type="pil", format="png", interactive=False, height=height,
                             elem_id=f"{elem_id}-view")
        self.file.change(user_errors(f"reading {label}")(self.read), self.file, self.view, **LIGHT_EVENT)

    def read(self, path: str | None):
        return None if path is None else read_upload(path, self.label)


def read_upload(path: str | None, label: str, mode: str = "RGB"):
    """An uploaded file opened under our limits (checks.read_image), named as the page labels it."""
    if path is None:
        return None
    return read_image(path, mode, what=label, name=Path(path).name)


# ---------- per-user state: a folder for the session's LoRA files, and its latest LoRA per tab -------------------


def slug(text: str, n: int = 32) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:n].strip("-") or "lora"


def new_session(app: App, request: gr.Request | None) -> dict:
    key = getattr(request, "session_hash", None) or uuid.uuid4().hex
    folder = app.root / slug(key, 64)
    folder.mkdir(parents=True, exist_ok=True)
    return {"dir": str(folder), "lora": {}, "runs": 0}


def drop_session(session: dict | None) -> None:
    if session:
        shutil.rmtree(session["dir"], ignore_errors=True)


def uploaded(image: str | Image.Image | None, label: str) -> tuple[Image.Image | None, list[str]]:
    """An uploaded file opened under our own limits (see checks.read_image), fitted to the upload limit, and a
    note when it had to be downscaled. `label` is the field as the page names it."""
    if image is None:
        return None, []
    if not isinstance(image, Image.Image):
        image = read_upload(image, label)
    image, note = fit_upload(image)
    return image, [f"_{label}: {note}._"] if note else []
