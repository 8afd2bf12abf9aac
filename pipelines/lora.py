"""LoRA on the generator's transformer: create (peft), save (diffusers format), apply for one call.

Files are safetensors in the layout `pipe.save_lora_weights` writes, so a stock diffusers pipeline
of the same model loads them with `pipe.load_lora_weights(path)`. Our own facts (prompt, questions,
preset, ...) ride along in the header under `dual_process.*` keys, the ModelSpec keys under `modelspec.*`.

Same strength in every loader: the LoRA trains with alpha = 5 x rank, but the file stores the scale alpha / rank
folded into each `lora_B` and says alpha = rank. A loader that reads diffusers' header (diffusers, peft) finds
alpha / rank = 1; ComfyUI, which reads only per-module `.alpha` tensors and uses 1 without them, also applies 1.
Per-module `.alpha` tensors were the other way, but Sana's diffusers loader does not read them, and a file with no
alpha anywhere cannot be misread by any loader.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.utils import logging as diffusers_logging
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import modelspec
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


def folded(state_dict: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """The LoRA with its scale multiplied into every `lora_B`: B @ A then means what scale x B @ A meant."""
    return {k: v * scale if ".lora_B." in k else v for k, v in state_dict.items()}


def save_lora(path: str | Path, state_dict: dict[str, torch.Tensor], pipeline_cls: type, rank: int,
              alpha: float, targets: tuple[str, ...], metadata: dict[str, object],
              spec: dict[str, object] | None = None) -> Path:
    """Write a diffusers-format LoRA file with its config and our metadata in the header.

    Args:
        state_dict: the trained adapter's weights (peft names, trained at `alpha`); written with alpha / rank
            folded into `lora_B` and alpha = rank, so every loader applies them at the strength we trained.
        pipeline_cls: the diffusers pipeline class whose `save_lora_weights` sets the key layout.
        metadata: our facts, written under `dual_process.*` (the training alpha among them).
        spec: the ModelSpec fields (`modelspec.header`'s arguments but the tensors), or None for none.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"LoRA output {str(path)!r} must end in .safetensors")
    config = {"r": rank, "lora_alpha": rank, "target_modules": sorted(targets), "use_dora": False,
              "lora_bias": False}
    with tempfile.TemporaryDirectory() as tmp:
        # The library writes the layout and its own adapter metadata; we re-save to add ours.
        pipeline_cls.save_lora_weights(tmp, transformer_lora_layers=folded(state_dict, alpha / rank),
                                       transformer_lora_adapter_metadata=config, weight_name="lora.safetensors")
        tensors, header = read_lora(Path(tmp) / "lora.safetensors")
    header |= {META_PREFIX + k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    header[META_PREFIX + "folded_scale"] = json.dumps(alpha / rank)
    if spec is not None:
        header |= modelspec.header(tensors=tensors, **spec)
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


def file_alpha(tensors: dict[str, torch.Tensor], header: dict[str, str], module: str, rank: int) -> float:
    """The alpha a file gives one module: its `.alpha` tensor, else diffusers' header, else rank (scale 1, as
    ComfyUI reads a file without either)."""
    if f"transformer.{module}.alpha" in tensors:
        return float(tensors[f"transformer.{module}.alpha"])
    config = json.loads(header.get("lora_adapter_metadata") or "{}")
    return float(config.get("transformer.lora_alpha", config.get("lora_alpha", rank)))


@dataclass(frozen=True)
class Parent:
    """The LoRA a run continues from (`--init-lora`, the app's "Continue from this LoRA")."""

    state_dict: dict[str, torch.Tensor]  # peft names, the scale folded in: the delta is B @ A
    rank: int
    steps: int  # optimization steps behind these weights, all runs together
    sha256: str  # the parent file's tensor hash (`modelspec.tensor_hash`)
    name: str  # how the user knows the file
    seed: int | None = None  # the seed the parent was trained with, when its header says


def read_parent(path: str | Path, transformer: torch.nn.Module, preset: str | None = None,
                name: str | None = None) -> Parent:
    """A LoRA file as the starting weights of a new run: checked against the model (`check_lora_fits`), each
    module's strength (alpha / rank, from the file as every loader reads it) folded into its B."""
    check_lora_fits(path, transformer, preset, name)
    tensors, header = read_lora(path)
    shown = name or Path(path).name
    weights: dict[str, torch.Tensor] = {}
    ranks = set()
    for key, tensor in tensors.items():
        if not key.startswith("transformer.") or ".lora_" not in key:
            continue
        module, kind = key[len("transformer."):].rsplit(".lora_", 1)
        rank = tensors[f"transformer.{module}.lora_A.weight"].shape[0]
        ranks.add(rank)
        scale = file_alpha(tensors, header, module, rank) / rank if kind.startswith("B") else 1.0
        weights[key[len("transformer."):]] = tensor.float() * scale
    if len(ranks) != 1:
        raise ValueError(f"LoRA file {shown!r} has modules of ranks {sorted(ranks)}; a run continues from one rank")
    steps = json.loads(header.get(META_PREFIX + "total_steps") or header.get(META_PREFIX + "steps") or "0")
    seed = json.loads(header.get(META_PREFIX + "seed") or "null")
    return Parent(weights, ranks.pop(), int(steps), modelspec.tensor_hash(tensors), shown,
                  seed if isinstance(seed, int) else None)


def load_parent(transformer: torch.nn.Module, parent: Parent, alpha: float, name: str = TRAINING_ADAPTER) -> None:
    """Copy the parent's weights into the adapter `add_lora` made at `alpha` (B unfolded by rank / alpha, so the
    delta is the parent's); the two must adapt the same modules at the same rank."""
    mine = set(get_peft_model_state_dict(transformer, adapter_name=name))
    theirs = set(parent.state_dict)
    if mine != theirs:
        extra, missing = sorted(theirs - mine), sorted(mine - theirs)
        what = (f"adapts {extra[0].rsplit('.lora_', 1)[0]!r}, which this run does not train" if extra else
                f"lacks {missing[0].rsplit('.lora_', 1)[0]!r}, which this run trains")
        raise ValueError(f"LoRA file {parent.name!r} {what}: it was made with other LoRA targets")
    result = set_peft_model_state_dict(transformer, folded(parent.state_dict, parent.rank / alpha), adapter_name=name)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"LoRA file {parent.name!r} did not load: {result.unexpected_keys[0]}")


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
    with stacked(pipe, [] if path is None else [(path, scale)], preset):
        yield


@contextmanager
def diffusers_quiet() -> Iterator[None]:
    """diffusers' log at errors only, for the block."""
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


@contextmanager
def stacked(pipe, loras: Sequence[tuple[str | Path, float]], preset: str | None = None) -> Iterator[None]:
    """`applied` for several LoRAs at once, each at its own scale (diffusers' multi-adapter `set_adapters`): the
    deltas add up. Every file is checked before the first one is loaded."""
    if not loras:
        yield
        return
    for path, scale in loras:
        check_lora_fits(path, pipe.transformer, preset)
        check_scale(scale)
    names = [f"user_{uuid.uuid4().hex[:8]}" for _ in loras]
    had_adapters = bool(getattr(pipe.transformer, "peft_config", None))
    try:
        with diffusers_quiet():  # our files adapt the transformer only: not "no LoRA keys for the text encoder"
            for name, (path, _) in zip(names, loras, strict=True):
                pipe.load_lora_weights(str(path), adapter_name=name)
        pipe.set_adapters(names, [float(scale) for _, scale in loras])
        yield
    finally:
        for name in names:
            if name in (getattr(pipe.transformer, "peft_config", None) or {}):
                pipe.delete_adapters(name)
        if not had_adapters:
            remove_all_lora(pipe.transformer)
