"""LoRA on the generator's transformer: create (peft), save (diffusers format), apply for one call.

Files are safetensors in the layout `pipe.save_lora_weights` writes, so a stock diffusers pipeline
of the same model loads them with `pipe.load_lora_weights(path)`. Our own facts (prompt, questions,
preset, ...) ride along in the header under `dual_process.*` keys.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .checks import check_scale
from .files import replacing

TRAINING_ADAPTER = "vlm_guidance"
META_PREFIX = "dual_process."


def add_lora(transformer: torch.nn.Module, rank: int, alpha: float, targets: tuple[str, ...],
             name: str = TRAINING_ADAPTER) -> list[torch.nn.Parameter]:
    """Inject a trainable LoRA; return its parameters, in fp32 whatever the frozen weights' dtype."""
    if rank < 1:
        raise ValueError(f"LoRA rank {rank} must be at least 1")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights="gaussian",
                        lora_dropout=0.0)
    transformer.add_adapter(config, adapter_name=name)
    params = [p for n, p in transformer.named_parameters() if f".{name}." in n and "lora_" in n]
    for p in params:
        p.data = p.data.float()  # peft creates them in the base dtype; Adam on bf16 stalls
        p.requires_grad_(True)
    return params


def remove_all_lora(transformer: torch.nn.Module) -> None:
    """Take every LoRA layer out, restoring the original modules (bit-identical outputs)."""
    if getattr(transformer, "_hf_peft_config_loaded", False):
        transformer.unload_lora()


def lora_state_dict(transformer: torch.nn.Module, name: str = TRAINING_ADAPTER) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu().contiguous()
            for k, v in get_peft_model_state_dict(transformer, adapter_name=name).items()}


def save_lora(path: str | Path, state_dict: dict[str, torch.Tensor], pipeline_cls: type, rank: int,
              alpha: float, targets: tuple[str, ...], metadata: dict[str, object]) -> Path:
    """Write a diffusers-format LoRA file with its config and our metadata in the header."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"LoRA output {str(path)!r} must end in .safetensors")
    config = {"r": rank, "lora_alpha": alpha, "target_modules": sorted(targets), "use_dora": False,
              "lora_bias": False}
    with tempfile.TemporaryDirectory() as tmp:
        # The library writes the layout and its own adapter metadata; we re-save to add ours.
        pipeline_cls.save_lora_weights(tmp, transformer_lora_layers=state_dict,
                                       transformer_lora_adapter_metadata=config, weight_name="lora.safetensors")
        tensors, header = read_lora(Path(tmp) / "lora.safetensors")
    header |= {META_PREFIX + k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    with replacing(path) as tmp:  # a failed write never leaves half a file where a good one was
        save_file(tensors, str(tmp), metadata=header)
    return path


def read_lora(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header of a LoRA file; clear errors for a missing or non-safetensors file."""
    path = check_lora_file(path)
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def lora_metadata(path: str | Path) -> dict[str, object]:
    """Our metadata (prompt, questions, preset, rank, ...) from a LoRA file's header."""
    _, header = read_lora(path)
    out: dict[str, object] = {}
    for k, v in header.items():
        if k.startswith(META_PREFIX):
            try:
                out[k[len(META_PREFIX):]] = json.loads(v)
            except json.JSONDecodeError:
                out[k[len(META_PREFIX):]] = v
    return out


def check_lora_file(path: str | Path, name: str | None = None) -> Path:
    """A readable .safetensors file holding LoRA weights; errors name the file (`name`: how the user knows it,
    e.g. an upload's own file name rather than a temporary path)."""
    path = Path(path)
    shown = repr(name or str(path))
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file {shown} does not exist")
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"LoRA file {shown} is not a .safetensors file")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"LoRA file {shown} is not a readable safetensors file ({exc})") from None
    if not any("lora" in k for k in keys):
        raise ValueError(f"LoRA file {shown} holds no LoRA weights")
    return path


def check_lora_fits(path: str | Path, transformer: torch.nn.Module, preset: str | None = None,
                    name: str | None = None) -> None:
    """A LoRA file made for this model: the preset its header names (when it names one) is `preset`, and every
    weight has the shape of the layer it adapts. Refused naming the file and the first mismatch, before anything
    is loaded (so a stranger's file never reaches `load_state_dict`)."""
    tensors, header = read_lora(path)
    shown = repr(name or Path(path).name)
    made_for = header.get(META_PREFIX + "preset")
    if preset and made_for and made_for != preset:
        raise ValueError(f"LoRA file {shown} was made for preset {made_for!r}; this model is preset {preset!r}")
    modules = dict(transformer.named_modules())
    for key, tensor in tensors.items():
        if not key.startswith("transformer.") or ".lora_" not in key:
            continue  # text-encoder LoRAs and alphas are the loader's business
        module_path, kind = key[len("transformer."):].rsplit(".lora_", 1)
        module = modules.get(module_path)
        weight = getattr(getattr(module, "base_layer", module), "weight", None)
        if weight is None:
            raise ValueError(f"LoRA file {shown} adapts {module_path!r}, which this model does not have")
        side, axis = ("inputs", 1) if kind.startswith("A") else ("outputs", 0)
        if tensor.dim() < 2 or tensor.shape[axis] != weight.shape[axis]:
            raise ValueError(f"LoRA file {shown} does not fit this model: {module_path} has {weight.shape[axis]} "
                             f"{side}, the file's {kind.split('.')[0]} matrix {tuple(tensor.shape)}")


@contextmanager
def applied(pipe, path: str | Path | None, scale: float = 1.0, preset: str | None = None) -> Iterator[None]:
    """Load a LoRA into a shared pipeline for the duration of one call; afterwards, and after an
    exception, the pipeline is exactly as before (no adapter, original modules). With `preset`, a file whose
    header names another preset is refused (see `check_lora_fits`); a file that does not fit always is."""
    if path is None:
        yield
        return
    path = check_lora_file(path)
    check_scale(scale)
    check_lora_fits(path, pipe.transformer, preset)
    name = f"user_{uuid.uuid4().hex[:8]}"
    had_adapters = bool(getattr(pipe.transformer, "peft_config", None))
    try:
        pipe.load_lora_weights(str(path), adapter_name=name)
        pipe.set_adapters([name], [scale])
        yield
    finally:
        if name in (getattr(pipe.transformer, "peft_config", None) or {}):
            pipe.delete_adapters(name)
        if not had_adapters:
            remove_all_lora(pipe.transformer)
