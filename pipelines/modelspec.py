"""ModelSpec 1.0.1 header keys: what LoRA tools and model-sharing sites read from a .safetensors header.

Stability AI's ModelSpec puts `modelspec.*` string keys in the safetensors header: architecture, title, resolution,
date, description, a usage hint, a thumbnail (a data: URL image) and the hash of the tensor data. We write them next
to our own `dual_process.*` keys, so a file shared on a model site says what it is without our code.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import json

import torch
from PIL import Image
from safetensors.torch import save

SPEC_VERSION = "1.0.1"
PREFIX = "modelspec."
THUMBNAIL_SIDE = 128  # small: the whole header must stay a few kB above the weights
SHOWN = ("title", "architecture", "implementation", "resolution", "date", "description", "usage_hint",
         "hash_sha256")  # what the Use a LoRA tab lists


def tensor_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of the file's tensor data without its header, as kohya's trainers compute `modelspec.hash_sha256`:
    metadata edits do not change it, so two files with the same weights share it."""
    data = save(tensors)  # the bytes `save_file` would write with no metadata
    header_len = int.from_bytes(data[:8], "little")
    return "0x" + hashlib.sha256(data[8 + header_len:]).hexdigest()


def thumbnail_url(image: Image.Image, side: int = THUMBNAIL_SIDE) -> str:
    """A small PNG of `image` as a data: URL (the ModelSpec thumbnail)."""
    small = image.convert("RGB")
    small.thumbnail((side, side), Image.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail_image(url: str) -> Image.Image | None:
    """The thumbnail back as an image; None when the value is not a PNG or JPEG data: URL we can read."""
    head, _, data = url.partition(",")
    if not head.startswith("data:image/") or ";base64" not in head:
        return None
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        image.load()
    except (ValueError, OSError):
        return None
    if image.format not in ("PNG", "JPEG") or max(image.size) > 4 * THUMBNAIL_SIDE:
        return None  # a stranger's header is not ours to render at any size
    return image.convert("RGB")


def header(*, architecture: str, implementation: str, title: str, resolution: int, description: str,
           usage_hint: str, tensors: dict[str, torch.Tensor], thumbnail: Image.Image | None = None,
           date: datetime.datetime | None = None) -> dict[str, str]:
    """The ModelSpec keys of one LoRA file.

    Args:
        architecture: the base model's ModelSpec name, e.g. "flux-1-schnell" ("/lora" is appended).
        implementation: where the base model's code lives (a URL).
        title, description, usage_hint: what a sharing site shows (name, what it was trained for, suggested scale).
        resolution: the square side it was trained at.
        tensors: the file's tensors exactly as written (for `hash_sha256`).
        thumbnail: the after image (stored as a small PNG data: URL); None leaves the key out.
        date: when it was made (default: now, UTC).
    """
    date = date or datetime.datetime.now(datetime.timezone.utc)
    keys = {"sai_model_spec": SPEC_VERSION, "architecture": f"{architecture}/lora", "implementation": implementation,
            "title": title, "resolution": f"{resolution}x{resolution}", "date": date.isoformat(timespec="seconds"),
            "description": description, "usage_hint": usage_hint, "hash_sha256": tensor_hash(tensors)}
    if thumbnail is not None:
        keys["thumbnail"] = thumbnail_url(thumbnail)
    return {PREFIX + k: v for k, v in keys.items()}


def read(file_header: dict[str, str]) -> dict[str, str]:
    """The `modelspec.*` keys of a header, without the prefix."""
    return {k[len(PREFIX):]: v for k, v in file_header.items() if k.startswith(PREFIX)}


def description(prompt: str, questions: list[list[str]] | list[tuple[str, str]], controls: list[str]) -> str:
    """What the LoRA was trained for, in plain words: prompt, visual prompts, questions."""
    lines = [f"Dual-process LoRA trained for the prompt {json.dumps(prompt)}."]
    if controls:
        lines.append("Visual prompt: " + "; ".join(controls) + ".")
    lines += [f"Asked: {q} Expected: {a}." for q, a in questions]
    return " ".join(lines)
