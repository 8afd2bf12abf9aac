"""Load a preset's generator and VLM: from the hub, a local folder, or random weights built in code."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer
from transformers.utils import cached_file

from . import generator as gen_mod
from . import random_models
from . import vlm as vlm_mod
from .presets import Preset, check_source


def pick_dtype(name: str, device: str | torch.device) -> torch.dtype:
    """bf16 where the device runs it fast; fp32 on the CPU, where bf16 matmuls are slow."""
    device = torch.device(device)
    if name == "float32" or device.type == "cpu":
        return torch.float32
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return getattr(torch, name)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class _on_device:
    """Build random full-size models straight on the target device and dtype (no CPU copy)."""

    def __init__(self, device: str | torch.device, dtype: torch.dtype):
        self.device, self.dtype = torch.device(device), dtype

    def __enter__(self):
        self._old = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        self._ctx = torch.device(self.device)
        self._ctx.__enter__()

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        torch.set_default_dtype(self._old)


def load_generator(preset: Preset, device: str | torch.device | None = None) -> gen_mod.Generator:
    device = device or default_device()
    source = check_source(preset.generator_source)
    family = gen_mod.family(preset.generator)
    dtype = pick_dtype(preset.dtype, device)
    if source.startswith("random:"):
        size = source.split(":")[1]
        random_models.seeded(0)
        with _on_device(device if size == "full" else "cpu", dtype):
            pipe = family.random(size, preset)
    else:
        pipe = family.pipeline.from_pretrained(source, dtype=dtype)
    return family.adapter(pipe, preset, device)


def processor_chat_template(source: str) -> str | None:
    """The processor's own chat template (chat_template.jinja or .json), as the model ships it."""
    path = cached_file(source, "chat_template.jinja", _raise_exceptions_for_missing_entries=False)
    if path:
        return Path(path).read_text()
    path = cached_file(source, "chat_template.json", _raise_exceptions_for_missing_entries=False)
    if path:
        return json.loads(Path(path).read_text())["chat_template"]
    return None


def load_vlm(preset: Preset, device: str | torch.device | None = None) -> vlm_mod.VLM:
    device = device or default_device()
    source = check_source(preset.vlm_source)
    dtype = pick_dtype(preset.dtype, device)
    family = vlm_mod.family(preset.vlm)
    if source.startswith("random:"):
        size = source.split(":")[1]
        random_models.seeded(0)
        with _on_device(device if size == "full" else "cpu", dtype):
            model, tokenizer, image_processor = family.random(
                "tiny" if size == "tiny" else preset.random_vlm_size)
    else:
        model = getattr(transformers, family.model_class).from_pretrained(source, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(source)
        image_processor = getattr(transformers, family.processor_class).from_pretrained(source)
        template = processor_chat_template(source)
        if template:
            tokenizer.chat_template = template
    return family.adapter(model.to(device, dtype), tokenizer, image_processor, device)


def save_random(preset: Preset, folder: str | Path) -> tuple[Path, Path]:
    """Write a preset's random-weight models as model folders, the offline stand-in for hub ids."""
    folder = Path(folder)
    gen = load_generator(preset, "cpu")
    gen.pipe.save_pretrained(folder / "generator")
    vlm = load_vlm(preset, "cpu")
    vlm.model.save_pretrained(folder / "vlm")
    vlm.tokenizer.save_pretrained(folder / "vlm")
    vlm.image_processor.save_pretrained(folder / "vlm")
    (folder / "vlm" / "chat_template.jinja").write_text(vlm.tokenizer.chat_template)
    return folder / "generator", folder / "vlm"
