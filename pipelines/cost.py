"""What one optimisation step costs, counted without weights, compute or a GPU: a prediction.

    python -m pipelines.bench --cost --preset flux-schnell --size 512 [--json cost.json]

The preset's full-size architectures (`random_models.py`) are built on the meta device: every tensor has its
shape and dtype and no memory. ONE optimisation step of our own code then runs on them, twice (gradient
checkpointing off, then on), with the calls `optimize()` makes: `Generator.checkpointing`, `lora.add_lora` (once for
both), AdamW, `judged_pixels` (the sampler without gradient, ONE transformer step with the LoRA, the VAE decode,
the overlay), `VLM.answer_nll`, `loss.backward()`, the gradient clip and the AdamW step. While it runs:

- `torch.utils.flop_counter.FlopCounterMode` counts the FLOPs of matrix multiplies, convolutions and attention
  (elementwise ops are not counted), split by stage where the step crosses from one model to the next
  (`StepProbe`), forward and backward;
- `torch.autograd.graph.saved_tensors_hooks` sees every tensor autograd keeps for the backward pass: its bytes
  are its storage's (nothing is allocated on meta, the sizes are exact). Rule: one count per storage (views and
  repeated saves of one tensor count once), the weights' storages never. With checkpointing on, the models' own
  checkpointing (diffusers `enable_gradient_checkpointing`) keeps each block's inputs only, and those are what
  the hooks see.

Two things a meta tensor cannot do are bridged:
- values: the step reads a few small tensors (token ids, the VLM's image grid and positions, masks). Tensors of at
  most `KNOWN_MAX` elements whose inputs are known are computed for real on the CPU beside their meta twins, so
  `.item()`, `.tolist()` and data-dependent shapes work; everything large stays shapes only.
- attention: on meta, `F.scaled_dot_product_attention` takes the math path, which keeps the attention matrix in
  fp32. A GPU runs fused kernels, so the call is sent to their meta implementations (flash attention for
  unmasked bf16 / fp16, the memory-efficient kernel otherwise): their FLOPs and what they save.

With `base_weights` int8 / fp8 the transformer is quantised as `Generator` loads it (torchao, weight-only) before
the step runs, so what the quantised layers save for the backward pass is counted too. Memory is then a sum
(`estimate`), with its assumptions listed in the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# torch's documented base class for dispatch modes, and its pytree helpers, live in these modules only.
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten
from torch.utils.flop_counter import FlopCounterMode

from . import lora
from .bench import QUESTION
from .generator import quantize_base_weights
from .loading import load_generator, load_vlm
from .optimize import judged_pixels, lora_settings, train_seed
from .presets import Preset, is_local

DEFAULT_PEAK_TFLOPS = 790.0  # an H200's measured dense bf16 matmul rate
PROMPT = "a tropical beach at sunset"
TEXT_ENCODERS = ("gpu", "offload")
BASE_WEIGHTS = ("bf16", "int8", "fp8")
GPU_SIZES_GIB = (24, 48, 80, 96)
HEADROOM_GIB = 1.0  # the CUDA context and allocator slack a card's nominal size also has to hold
KNOWN_MAX = 1 << 20  # tensors up to this many elements get real values beside the meta ones
GIB = 2**30
META = torch.device("meta")
STAGES = ("sampler (no grad)", "transformer", "vae decode", "vlm", "other")


# --------------------------------------------------------------------------- the report
def fmt_bytes(nbytes: float) -> str:
    """Bytes in binary units: '53.61 GiB', '4.0 MiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes:.0f} B"


def fmt_flops(n: float) -> str:
    """FLOPs in decimal units: '57.8 TFLOP', '92.7 MFLOP'."""
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} FLOP"


@dataclass
class Component:
    """One model of the preset as the memory plan loads it: `bytes` counts parameters and buffers (a quantised
    weight: its int8 / fp8 data and scales)."""

    name: str  # transformer, vae, text_encoder, text_encoder_2, vlm
    model: str  # its class
    role: str  # transformer | vae | text_encoder | vlm
    parameters: int
    dtype: str  # as loaded; "bfloat16 + int8 Linear weights" when quantised
    bytes: int


@dataclass
class Stage:
    """FLOPs and saved-activation bytes of one part of the step; `how` says how they were counted."""

    name: str
    flops: float
    saved_bytes: int
    how: str


@dataclass
class Measurement:
    """What the meta runs counted for one preset, size and base-weights plan, with checkpointing off and on
    (`estimate` turns it into a report)."""

    preset: Preset
    size: int
    base_weights: str
    quantize_vlm: bool
    components: list[Component]
    lora_parameters: int
    lora_train_bytes: int  # LoRA weights, their gradients and AdamW's two moments, fp32, as the step left them
    flops: dict[bool, dict[str, float]]  # checkpointing -> stage -> FLOPs
    saved: dict[bool, dict[str, int]]  # checkpointing -> stage -> saved bytes
    sampler_pass_flops: float  # one no-grad transformer pass
    sampler_passes: float  # expected no-grad passes per step
    largest_unit: tuple[str, int]  # the checkpointed block that saves the most without checkpointing
    largest_tensor: dict[bool, int]  # checkpointing -> bytes of the largest new tensor one op made in the step
    encode_flops: float
    encode_largest_tensor: int
    tokens: dict[str, object]
    checkpointed: list[str]  # the models `Generator.checkpointing(True)` reaches
    plan: tuple[str, str]  # the preset's own memory plan (`plan_of`): text encoders, base weights


@dataclass
class CostReport:
    """The cost of one optimisation step of a preset at a size, and a predicted peak of GPU memory."""

    preset: str
    size: int
    checkpointing: bool
    text_encoders: str
    base_weights: str
    quantize_vlm: bool
    peak_tflops: float
    steps: int
    components: list[Component]
    stages: list[Stage]
    flops_per_step: float
    floor_s: float  # `steps` steps at `peak_tflops`
    saved_bytes: dict[str, int]  # "on" / "off": saved activations with checkpointing on and off
    memory: dict[str, int]  # the terms of the step's peak
    peak_bytes: int  # the optimisation step
    encode_peak_bytes: int  # encoding a prompt: every model on the GPU (offloaded text encoders visit it)
    lora_parameters: int
    tokens: dict[str, object]
    assumptions: list[str] = field(default_factory=list)

    @property
    def process_peak_bytes(self) -> int:
        """The run's peak: the step's, or encoding a prompt's when that is higher."""
        return max(self.peak_bytes, self.encode_peak_bytes)

    def fits(self, gib: float) -> bool:
        """Whether the run's predicted peak (the step's, or encoding a prompt's when that is higher) plus
        `HEADROOM_GIB` fits a card of `gib` GiB."""
        return self.process_peak_bytes + HEADROOM_GIB * GIB <= gib * GIB

    def as_dict(self) -> dict[str, object]:
        """Every field, plus the derived figures (what `bench --cost --json` writes)."""
        out = dataclasses.asdict(self)
        out |= {"prediction": True, "flops_per_step_total": self.flops_per_step,
                "steering_flops": {"views_4": self.steering_flops(views=4), "noises_2": self.steering_flops(noises=2),
                                   "keep": self.steering_flops(keep=1.0),
                                   "prompt_question": self.steering_flops(questions=2)},
                "process_peak_bytes": self.process_peak_bytes,
                "fits_gib": {str(g): self.fits(g) for g in GPU_SIZES_GIB}}
        return out

    def text(self) -> str:
        """The report as lines of text (what `bench --cost` prints)."""
        quantised = self.base_weights != "bf16"
        b = fmt_bytes
        lines = [f"PREDICTION (counted on the meta device; nothing ran on a GPU): preset {self.preset}, "
                 f"{self.size} px, checkpointing {self.mode}, text encoders {self.text_encoders}, "
                 f"base weights {self.base_weights}{' (VLM too)' if quantised and self.quantize_vlm else ''}",
                 "components (as loaded):"]
        for c in self.components:
            lines.append(f"  {c.name:15s} {c.model:35s} {c.parameters:>15,d} params  {c.dtype:8s} {b(c.bytes):>10s}")
        lines.append(f"  {'LoRA':15s} {'fp32, + gradients and AdamW moments':35s} {self.lora_parameters:>15,d} params"
                     f"  {'float32':8s} {b(self.memory['lora_and_adamw']):>10s}")
        lines.append("one optimisation step:")
        for s in self.stages:
            lines.append(f"  {s.name:18s} {fmt_flops(s.flops):>12s}  saved {b(s.saved_bytes):>10s}  {s.how}")
        total = b(self.saved_bytes[self.mode])
        lines.append(f"  {'total':18s} {fmt_flops(self.flops_per_step):>12s}  saved {total:>10s}")
        lines.append(f"time floor: {self.steps} steps x {fmt_flops(self.flops_per_step)} at {self.peak_tflops:g} "
                     f"TFLOP/s = {self.floor_s:.2f} s")
        lines.append(self.steering_line())
        lines.append(f"saved activations: checkpointing on {b(self.saved_bytes['on'])}, "
                     f"off {b(self.saved_bytes['off'])}")
        terms = " + ".join(f"{k.replace('_', ' ')} {b(v)}" for k, v in self.memory.items())
        lines.append(f"peak GPU memory of the step: {terms} = {b(self.peak_bytes)}")
        lines.append(f"encoding a prompt (every model on the GPU): {b(self.encode_peak_bytes)}; the run's peak "
                     f"{b(self.process_peak_bytes)} fits with {HEADROOM_GIB:g} GiB to spare: "
                     + ", ".join(f"{g} GiB {'yes' if self.fits(g) else 'no'}" for g in GPU_SIZES_GIB))
        lines.append("sequences: " + ", ".join(f"{k} {v}" for k, v in self.tokens.items()))
        lines.append("assumptions:")
        lines += [f"  - {a}" for a in self.assumptions]
        return "\n".join(lines)

    def steering_flops(self, views: int = 0, noises: int = 1, keep: float = 0.0, questions: int = 1) -> float:
        """FLOPs of one step with `steering.py`'s options (a prediction from the stages): every view past the first
        and every question past the first (the prompt's own question, `--keep-prompt`) runs the VLM stage again
        (one batch row each), every noise the whole step, and `keep` the base model's picture for the same
        noise: the no-grad sampler again (multi-step models) and one no-grad forward of the transformer and the VAE
        decoder (a quarter of their stage with checkpointing: forward, recomputed forward and a backward of about
        two; a third without)."""
        stage = {s.name: s.flops for s in self.stages}
        forward = (stage["sampler (no grad)"] + (stage["transformer"] + stage["vae decode"])
                   / (4 if self.checkpointing else 3))
        rows = max(views, 1) * max(questions, 1)
        per_noise = self.flops_per_step + stage["vlm"] * (rows - 1) + (forward if keep else 0.0)
        return noises * per_noise

    def steering_line(self) -> str:
        """The cost of each steering option alone, as a multiple of the plain step (what `bench --cost` prints)."""
        plain = self.flops_per_step
        parts = {"4 views": self.steering_flops(views=4), "2 noises": self.steering_flops(noises=2),
                 "keep": self.steering_flops(keep=1.0), "the prompt's question": self.steering_flops(questions=2),
                 "all three": self.steering_flops(4, 2, 1.0)}
        return "steering (steering.py), a step with: " + ", ".join(f"{k} x{v / plain:.2f}" for k, v in parts.items())

    @property
    def mode(self) -> str:
        """Checkpointing as "on" / "off" (the keys of `saved_bytes`)."""
        return "on" if self.checkpointing else "off"

    def json(self) -> str:
        """`as_dict` as indented JSON."""
        return json.dumps(self.as_dict(), indent=1)


# --------------------------------------------------------------------------- running code on meta tensors
class _KnownValues(TorchDispatchMode):
    """Small tensors computed for real on the CPU beside their meta twins, so the step can read them.

    A meta op whose tensor inputs all have known values (or live on the CPU) and at most `KNOWN_MAX` elements is
    also run on those values; its outputs remember the result. `.item()` and `.tolist()` of a known tensor give
    the real numbers, and ops whose output shape depends on values (nonzero, boolean masks, repeat_interleave)
    take it from the real result. An in-place op with an unknown input forgets what its target held.
    Also records the largest tensor any op makes (bytes), for the transient term of the memory estimate.
    """

    def __init__(self) -> None:
        super().__init__()
        self.real: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(meta) -> (meta, real); both kept alive
        self.largest = 0

    def value(self, t: torch.Tensor) -> torch.Tensor | None:
        hit = self.real.get(id(t))
        return hit[1] if hit is not None and hit[0] is t else None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, spec = tree_flatten((args, kwargs))
        tensors = [x for x in flat if isinstance(x, torch.Tensor)]
        known = all(t.device != META or self.value(t) is not None for t in tensors)
        if not known or any(t.numel() > KNOWN_MAX for t in tensors):
            if func.__name__.endswith("_") or "out" in kwargs:  # the target's real values are stale now
                for t in tensors:
                    self.real.pop(id(t), None)
            return self._note(func(*args, **kwargs), tensors)
        cpu = torch.device("cpu")
        real_args, real_kwargs = tree_unflatten(
            [(self.value(x) if x.device == META else x) if isinstance(x, torch.Tensor)
             else cpu if isinstance(x, torch.device) and x == META else x for x in flat], spec)
        result = func(*real_args, **real_kwargs)
        to_meta = kwargs.get("device") == META or ("device" not in kwargs and any(t.device == META for t in tensors))
        if not to_meta or not isinstance(result, torch.Tensor | tuple | list):
            return result  # a Python number (.item()), or a copy to the CPU (.tolist(), .cpu())
        try:
            out = func(*args, **kwargs)
        except (RuntimeError, NotImplementedError):  # data-dependent shape: the real result says it
            out = tree_map(lambda r: r.to(META) if isinstance(r, torch.Tensor) else r, result)
        for o, r in zip(tree_flatten(out)[0], tree_flatten(result)[0], strict=False):
            if isinstance(o, torch.Tensor) and isinstance(r, torch.Tensor) and o.device == META:
                self.real[id(o)] = (o, r)
        return self._note(out, tensors)

    def _note(self, out, inputs: list[torch.Tensor]):
        """Keep the size of the largest new tensor (views and in-place results share an input's storage)."""
        shared = {id(t.untyped_storage()) for t in inputs}
        for o in tree_flatten(out)[0]:
            if isinstance(o, torch.Tensor) and o.device == META and id(o.untyped_storage()) not in shared:
                self.largest = max(self.largest, o.untyped_storage().nbytes())
        return out


def _fused_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                     enable_gqa=False):
    """`F.scaled_dot_product_attention` as a GPU runs it: flash attention (unmasked bf16 / fp16, head size up to
    256, grouped-query natively) or the memory-efficient kernel (masks, fp32; key/value heads repeated)."""
    squeeze = query.dim() == 3  # (heads, length, dim) callers
    if squeeze:
        query, key, value = query[None], key[None], value[None]
        attn_mask = None if attn_mask is None else attn_mask[None] if attn_mask.dim() == 3 else attn_mask
    head = query.shape[-1]
    if attn_mask is None and query.dtype in (torch.bfloat16, torch.float16) and head <= 256:
        out = torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal,
                                                                  scale=scale)[0]
    else:
        if key.shape[1] != query.shape[1]:
            rep = query.shape[1] // key.shape[1]
            key, value = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1)
        bias = None
        if attn_mask is not None:
            bias = attn_mask if attn_mask.dtype != torch.bool else torch.zeros(
                attn_mask.shape, dtype=query.dtype, device=query.device).masked_fill(~attn_mask, -math.inf)
            bias = bias.to(query.dtype).expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
        out = torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, bias, grad, dropout_p,
                                                                      is_causal, scale=scale)[0]
    return out[0] if squeeze else out


class _MetaFactories(TorchFunctionMode):
    """`torch.tensor(..., device="meta")` bypasses the dispatcher: build it on the CPU and move it, so it keeps its
    values (known tensors among its data give theirs)."""

    def __init__(self, values: _KnownValues) -> None:
        super().__init__()
        self.values = values

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if func in (torch.tensor, torch.as_tensor) and device is not None and torch.device(device) == META:
            args = tree_map(lambda x: self.values.value(x) if isinstance(x, torch.Tensor) and x.device == META
                            and self.values.value(x) is not None else x, args)
            return func(*args, **kwargs | {"device": "cpu"}).to(META)
        return func(*args, **kwargs)


@contextlib.contextmanager
def fused_attention() -> Iterator[None]:
    """Meta-device calls of `F.scaled_dot_product_attention` go to the fused kernels (`_fused_attention`).

    A function attribute swapped for the duration, not a TorchFunctionMode: modes are not active in the backward
    pass, where gradient checkpointing recomputes its blocks (and their attention). Other devices are untouched.
    """
    original = F.scaled_dot_product_attention

    def sdpa(query, key, value, *args, **kwargs):
        if query.device == META:
            return _fused_attention(query, key, value, *args, **kwargs)
        return original(query, key, value, *args, **kwargs)

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


@contextlib.contextmanager
def on_meta() -> Iterator[_KnownValues]:
    """Run model code on meta tensors: known small values and fused attention (see the module docstring)."""
    values = _KnownValues()
    with fused_attention(), _MetaFactories(values), values:
        yield values


def tensors_in(obj) -> list[torch.Tensor]:
    """The tensors in a module's inputs or outputs (tensors, tuples, lists, dicts such as a ModelOutput)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, tuple | list):
        return [t for item in obj for t in tensors_in(item)]
    return []


class StepProbe:
    """FLOPs and saved bytes of one step, split by stage at the models' boundaries.

    A stage is a model's forward call plus its share of the backward pass: from the gradient reaching the model's
    output to the gradient of its input (or the end of the backward pass when its inputs need none, as the
    transformer's). Marks of the FLOP counter's running total at those moments give each stage its FLOPs; what
    is left (the sampler's no-grad passes, the overlay, preprocessing, the loss, the clip and AdamW) is `other`.

    Saved tensors (`pack`, a saved_tensors_hooks pack hook) are counted once per storage and never when the
    storage is a parameter's or buffer's; they belong to the stage whose forward is running, and to the
    outermost checkpointable block running (`unit`).
    """

    def __init__(self, counter: FlopCounterMode, models: dict[str, torch.nn.Module],
                 units: list[tuple[str, torch.nn.Module]], frozen: list[torch.nn.Module]) -> None:
        self.counter = counter
        self.frozen = {id(s): s for m in frozen for t in (*m.parameters(), *m.buffers()) for s in storages(t)}
        self.seen: dict[int, object] = {}  # id(storage) -> storage: kept alive so that ids stay unique
        self.stage: str | None = None
        self.unit: list[str] = []
        self.flops = {name: 0.0 for name in models}
        self.saved = {name: 0 for name in (*models, "other")}
        self.units: dict[str, int] = {}
        self.open: dict[str, float] = {}  # stage -> running total when its backward share began
        self.backward = False
        self.no_grad_calls: dict[str, int] = {}
        self.handles = []
        for name, module in models.items():
            self.handles += [module.register_forward_pre_hook(self._enter(name), with_kwargs=True),
                             module.register_forward_hook(self._leave(name))]
        for name, module in units:
            self.handles += [module.register_forward_pre_hook(self._enter_unit(name)),
                             module.register_forward_hook(self._leave_unit)]

    def total(self) -> float:
        return float(self.counter.get_total_flops())

    def _enter(self, name: str):
        def hook(module, args, kwargs) -> None:
            if not torch.is_grad_enabled():
                self.no_grad_calls[name] = self.no_grad_calls.get(name, 0) + 1  # the sampler's: in `other`
                return
            if self.backward:
                return
            self.stage, self.open[name] = name, -self.total()
            for t in tensors_in((args, kwargs)):
                if t.requires_grad:  # its gradient ends the stage's share of the backward pass
                    t.register_hook(self._grad_done(name))
                    break
        return hook

    def _leave(self, name: str):
        def hook(module, args, output) -> None:
            if self.stage != name:
                return
            self.flops[name] += self.total() + self.open.pop(name)
            self.stage = None
            for t in tensors_in(output):
                if t.requires_grad:
                    t.register_hook(self._grad_begins(name))
                    break
        return hook

    def _grad_begins(self, name: str):
        def hook(grad) -> None:
            self.open[name] = -self.total()
        return hook

    def _grad_done(self, name: str):
        def hook(grad) -> None:
            if name in self.open:
                self.flops[name] += self.total() + self.open.pop(name)
        return hook

    def _enter_unit(self, name: str):
        def hook(*_) -> None:
            self.unit.append(name)
        return hook

    def _leave_unit(self, *_) -> None:  # a forward hook that returns something replaces the output: nothing
        self.unit.pop()

    def end_backward(self) -> None:
        """The backward pass is over: close the stages whose inputs needed no gradient (the transformer)."""
        for name in list(self.open):
            self.flops[name] += self.total() + self.open.pop(name)

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if id(storage) not in self.frozen and id(storage) not in self.seen and not self.backward:
            self.seen[id(storage)] = storage
            nbytes = storage.nbytes()
            self.saved[self.stage or "other"] += nbytes
            if self.unit:
                self.units[self.unit[0]] = self.units.get(self.unit[0], 0) + nbytes
        return t

    @contextlib.contextmanager
    def hooks(self) -> Iterator[StepProbe]:
        try:
            with torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t):
                yield self
        finally:
            for h in self.handles:
                h.remove()


# --------------------------------------------------------------------------- building
def random_preset(preset: Preset) -> Preset:
    """The preset with hub weights replaced by the full-size random builds (local folders and tiny builds stay),
    loaded as plain bf16 with every model on one device: the memory plan is applied by `build`."""
    def pick(source: str) -> str | None:
        return None if source.startswith("random:") or is_local(source) else "random:full"
    preset = preset.with_sources(pick(preset.generator_source), pick(preset.vlm_source))
    plan = {"base_weights": "bf16", "offload_text_encoders": False}  # where the preset has these fields
    names = {f.name for f in dataclasses.fields(preset)}
    return dataclasses.replace(preset, **{k: v for k, v in plan.items() if k in names})


def plan_of(preset: Preset) -> tuple[str, str]:
    """The preset's own memory plan: (text encoders "gpu" | "offload", base weights "bf16" | "int8" | "fp8")."""
    offload = getattr(preset, "offload_text_encoders", False)
    return ("offload" if offload else "gpu"), getattr(preset, "base_weights", "bf16")


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of a tensor; a quantised tensor subclass counts the tensors it holds (data and scales)."""
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def storages(t: torch.Tensor) -> list:
    """The storages behind a tensor (a quantised subclass: its own and those of the tensors it holds)."""
    out = [t.untyped_storage()]
    if hasattr(t, "__tensor_flatten__"):
        out += [s for n in t.__tensor_flatten__()[0] for s in storages(getattr(t, n))]
    return out


def component(name: str, role: str, model: torch.nn.Module, kind: str = "bf16") -> Component:
    """Parameters and bytes of one model as loaded (`kind`: how its nn.Linear weights were quantised)."""
    params = list(model.parameters())
    dtype = str(params[0].dtype).removeprefix("torch.")
    return Component(name=name, model=type(model).__name__, role=role, parameters=sum(p.numel() for p in params),
                     dtype=dtype if kind == "bf16" else f"{dtype} + {kind} Linear weights",
                     bytes=sum(tensor_bytes(t) for t in (*params, *model.buffers())))


def build(preset: Preset, base_weights: str = "bf16", quantize_vlm: bool = False):
    """The preset's generator and VLM on the meta device (call inside `on_meta()`), the frozen nn.Linear weights
    of the transformer (and with `quantize_vlm` the VLM's, lm_head aside) quantised as `base_weights` says."""
    preset = random_preset(preset)
    generator, vlm = load_generator(preset, META), load_vlm(preset, META)
    # A tiny build is made on the CPU and moved: the move gives tied weights (T5's embeddings) one copy each.
    for model in (getattr(generator.pipe, "text_encoder", None), getattr(generator.pipe, "text_encoder_2", None),
                  vlm.model):
        if hasattr(model, "tie_weights"):
            model.tie_weights()
    quantize_base_weights(generator.transformer, base_weights)
    if quantize_vlm:
        quantize_base_weights(vlm.model, base_weights, skip=("lm_head",))
    return generator, vlm


def components(generator, vlm, base_weights: str, quantize_vlm: bool) -> list[Component]:
    """The preset's models as loaded (before any LoRA)."""
    out = [component("transformer", "transformer", generator.transformer, base_weights),
           component("vae", "vae", generator.vae)]
    for name in ("text_encoder", "text_encoder_2"):
        module = getattr(generator.pipe, name, None)
        if module is not None:
            out.append(component(name, "text_encoder", module))
    return out + [component("vlm", "vlm", vlm.model, base_weights if quantize_vlm else "bf16")]


# --------------------------------------------------------------------------- counting
def flops_of(fn: Callable[[], object]) -> tuple[object, float]:
    """Run `fn` under a FLOP counter: (its result, FLOPs)."""
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return out, float(counter.get_total_flops())


def checkpoint_units(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The blocks diffusers checkpoints one by one: members of the model's block lists, and a decoder's mid block."""
    units = []
    for name, child in model.named_children():
        if isinstance(child, torch.nn.ModuleList) and name.endswith("blocks"):
            units += [(f"{name}.{i}", block) for i, block in enumerate(child)]
        elif name == "mid_block":
            units.append((name, child))
    return units


def checkpointable(generator) -> list[tuple[str, torch.nn.Module, torch.nn.Module]]:
    """(name, model, the module it runs) for the models `Generator.checkpointing(True)` reaches (Sana's DC-AE
    has no checkpointing)."""
    models = (("transformer", generator.transformer, generator.transformer),
              ("vae", generator.vae, generator.vae.decoder))
    return [m for m in models if getattr(m[1], "_supports_gradient_checkpointing", False)]


def sampler_passes(generator) -> float:
    """Expected no-grad transformer passes before the gradient step (see `Generator.noisy_latents`): none for a
    one-step model (one when re-noising); a multi-step model stops at a step drawn uniformly from the schedule's
    n intervals, (n - 1) / 2 passes on average."""
    preset = generator.preset
    if preset.inference_steps == 1:
        return 0.0 if preset.renoise is None else 1.0
    n = len(generator.sigmas(preset.inference_steps, generator.size)) - 1
    return (n - 1) / 2


def run_step(generator, vlm, cond, params: list[torch.nn.Parameter], qa_pairs: list[tuple[str, str]],
             overlay: np.ndarray, checkpointing: bool, seed: int, values: _KnownValues) -> dict[str, object]:
    """ONE optimisation step as `optimize()` takes it (the LoRA `params` attached), counted: FLOPs and saved bytes
    by stage and by checkpointable block, the LoRA's training state, the largest tensor one op made."""
    lr = lora_settings(generator.preset, None, None, None)[2]
    models = {"transformer": generator.transformer, "vae decode": generator.vae.decoder, "vlm": vlm.model}
    units = [(f"{name}.{unit_name}", unit) for name, _, runs in checkpointable(generator)
             for unit_name, unit in checkpoint_units(runs)]
    try:
        generator.checkpointing(checkpointing)
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        values.largest = 0
        with FlopCounterMode(display=False) as counter:
            probe = StepProbe(counter, models, units, [generator.transformer, generator.vae, vlm.model])
            with probe.hooks():
                pixels = judged_pixels(generator, cond, train_seed(seed, 1), overlay)
                nll = vlm.answer_nll(pixels.to(vlm.device), qa_pairs)
                loss = nll.mean()
                optimizer.zero_grad(set_to_none=True)
                probe.backward = True
                loss.backward()
                probe.end_backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
        train = sum(tensor_bytes(p) + tensor_bytes(p.grad) for p in params)
        train += sum(tensor_bytes(t) for s in optimizer.state.values() for t in s.values()
                     if isinstance(t, torch.Tensor) and t.device == META)  # the CPU step counters aside
        return {"flops": probe.flops, "total": float(counter.get_total_flops()), "saved": probe.saved,
                "units": probe.units, "largest": values.largest,
                "no_grad_passes": probe.no_grad_calls.get("transformer", 0), "lora_train_bytes": train}
    finally:
        generator.checkpointing(False)
        for p in params:
            p.grad = None


def step_tokens(generator, vlm, cond, qa_pairs: list[tuple[str, str]]) -> dict[str, object]:
    """The sequence lengths the step ran with: text conditioning, transformer image tokens, the VLM's rows."""
    latents = generator.initial_noise(0, generator.size)
    image_tokens = latents.shape[1] if latents.dim() == 3 else latents.shape[-1] * latents.shape[-2]  # Flux packs
    inputs = vlm.pixel_inputs(torch.zeros(1, 3, generator.size, generator.size, device=META))
    rows = [vlm.encode_turn(q, inputs, a) for q, a in qa_pairs]
    return {"text tokens": int(cond.tensors["prompt_embeds"].shape[1]), "image tokens": int(image_tokens),
            "vlm image": "x".join(str(s) for s in vlm.target_size(generator.size, generator.size)),
            "vlm rows": len(rows), "vlm tokens per row": max(len(p) + len(a) for p, a in rows)}


def measure(preset: Preset, size: int | None = None, base_weights: str = "bf16", quantize_vlm: bool = False,
            qa_pairs: list[tuple[str, str]] | None = None, prompt: str = PROMPT, seed: int = 0) -> Measurement:
    """Build the preset's architectures on the meta device and count one optimisation step, checkpointing off and
    on (hub weights are replaced by the full-size random builds: the shapes are the same). About half a minute
    on 2 CPU cores for Flux + Qwen2.5-VL-7B, seconds for the tiny presets, and no memory to speak of.

    Args:
        preset: the preset (its resolution, sequence length, LoRA and sampler settings are the ones counted).
        size: the image side in pixels (None: the preset's resolution).
        base_weights: "bf16", or "int8" / "fp8": the transformer's frozen nn.Linear weights quantised (torchao,
            weight-only) before the step runs, as `Generator` loads them.
        quantize_vlm: quantise the VLM's nn.Linear weights the same way (lm_head aside).
        qa_pairs: the questions the VLM is asked (default: one, as `pipelines.bench` times it).
        prompt: the text prompt (T5 and Gemma pad it to the preset's max_sequence_length).
        seed: the run's seed (the step counted is its first).
    """
    check_choice(base_weights, BASE_WEIGHTS, "base weights")
    if preset.vlm != "qwen2_5_vl":  # Idefics2 finds its padding images by the pixels' values, unknown on meta
        raise ValueError(f"the cost model counts Qwen2.5-VL judges only; preset {preset.name!r} judges with "
                         f"{preset.vlm}, whose forward reads the pixel values")
    quantize_vlm = quantize_vlm and base_weights != "bf16"
    plan = plan_of(preset)
    preset = random_preset(dataclasses.replace(preset, resolution=size or preset.resolution))
    qa_pairs = list(qa_pairs or QUESTION)
    with on_meta() as values:
        generator, vlm = build(preset, base_weights, quantize_vlm)
        parts = components(generator, vlm, base_weights, quantize_vlm)
        values.largest = 0
        cond, encode_flops = flops_of(lambda: generator.encode(prompt))
        encode_largest = values.largest
        overlay = np.zeros((preset.resolution, preset.resolution, 4), np.uint8)  # same cost whatever is drawn
        rank, alpha, _ = lora_settings(preset, None, None, None)
        # Attached once for both counted steps: peft's injection is the slow part on meta, and the step is the same.
        with warnings.catch_warnings():  # peft on quantised layers: merging would need torchao's config; unused
            warnings.filterwarnings("ignore", "TorchaoLoraLinear was instantiated", UserWarning)
            params = lora.add_lora(generator.transformer, rank, alpha, generator.lora_targets)
        try:
            runs = {on: run_step(generator, vlm, cond, params, qa_pairs, overlay, on, seed, values)
                    for on in (False, True)}
            x_t = generator.initial_noise(seed, preset.resolution)
            with torch.no_grad():  # one sampler pass: no gradient, the current LoRA active
                _, pass_flops = flops_of(lambda: generator.velocity(x_t, 1.0, cond))
        finally:
            lora.remove_all_lora(generator.transformer)
        passes = sampler_passes(generator)
        tokens = step_tokens(generator, vlm, cond, qa_pairs)
    flops, saved = {}, {}
    for on, run in runs.items():
        # This seed's sampler passes ran inside the step (in no stage): take them out, put the expected number in.
        other = run["total"] - sum(run["flops"].values()) - run["no_grad_passes"] * pass_flops
        flops[on] = {"sampler (no grad)": passes * pass_flops, **run["flops"], "other": other}
        saved[on] = {s: run["saved"].get(s, 0) for s in STAGES}
    units = runs[False]["units"]
    return Measurement(
        preset=preset, size=preset.resolution, base_weights=base_weights, quantize_vlm=quantize_vlm,
        components=parts, lora_parameters=sum(p.numel() for p in params),
        lora_train_bytes=runs[True]["lora_train_bytes"], flops=flops, saved=saved, sampler_pass_flops=pass_flops,
        sampler_passes=passes, largest_unit=max(units.items(), key=lambda kv: kv[1]) if units else ("", 0),
        largest_tensor={on: run["largest"] for on, run in runs.items()}, encode_flops=encode_flops,
        encode_largest_tensor=encode_largest, tokens=tokens,
        checkpointed=[name for name, _, _ in checkpointable(generator)], plan=plan)


# --------------------------------------------------------------------------- the estimate
def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """`value` when it is one of `choices`; otherwise a ValueError naming them."""
    if value not in choices:
        raise ValueError(f"{what} {value!r} must be one of: {', '.join(choices)}")
    return value


def estimate(preset: Preset, size: int | None = None, checkpointing: bool | None = None,
             text_encoders: str | None = None, base_weights: str | None = None, quantize_vlm: bool = False,
             peak_tflops: float = DEFAULT_PEAK_TFLOPS, measurement: Measurement | None = None) -> CostReport:
    """The cost of one optimisation step and the predicted peak GPU memory of a run: a prediction, nothing runs
    on a GPU.

    Args:
        preset: the preset to cost (`measure` builds its architectures on the meta device).
        size: the image side in pixels (None: the preset's resolution).
        checkpointing: gradient checkpointing of the transformer and VAE decoder (None: the preset's).
        text_encoders: "gpu" (they stay on the GPU) or "offload" (they wait on the CPU and visit the GPU only to
            encode a prompt: their weights are not in the step's peak); None: the preset's plan.
        base_weights: "bf16" (as loaded), or "int8" / "fp8": the transformer's frozen nn.Linear weights in 8 bits
            (torchao, weight-only; the LoRA stays fp32); None: the preset's plan.
        quantize_vlm: with int8 / fp8 base weights, the VLM's nn.Linear weights too (lm_head aside).
        peak_tflops: the matmul rate the time floor assumes (TFLOP/s).
        measurement: a `measure` result to reuse; its preset, size and base weights are the report's.
    """
    if not (peak_tflops > 0 and math.isfinite(peak_tflops)):
        raise ValueError(f"peak TFLOP/s {peak_tflops} must be a positive number")
    if measurement is None:
        measurement = measure(preset, size, base_weights or plan_of(preset)[1], quantize_vlm)
    m = measurement
    text_encoders = check_choice(text_encoders or m.plan[0], TEXT_ENCODERS, "text encoders")
    preset = m.preset
    on = preset.gradient_checkpointing if checkpointing is None else checkpointing
    resident = [c for c in m.components if not (c.role == "text_encoder" and text_encoders == "offload")]
    recompute = m.largest_unit[1] if on and m.checkpointed else 0
    memory = {"weights": sum(c.bytes for c in resident), "lora_and_adamw": m.lora_train_bytes,
              "saved_activations": sum(m.saved[on].values()), "transient": recompute + 2 * m.largest_tensor[on]}
    encode_peak = sum(c.bytes for c in m.components) + 2 * m.encode_largest_tensor
    how = {
        "sampler (no grad)": f"{m.sampler_passes:g} expected no-grad passes x {fmt_flops(m.sampler_pass_flops)} "
                             "(one pass counted, LoRA attached)",
        "transformer": "forward + backward, LoRA attached" + (", blocks recomputed" if on else ""),
        "vae decode": "forward + backward to the latents" + (
            "" if not on else ", blocks recomputed" if "vae" in m.checkpointed else ", no checkpointing in this VAE"),
        "vlm": "forward + backward to the pixels (frozen, never checkpointed)",
        "other": "overlay, preprocessing, loss, clip, AdamW: elementwise, not counted",
    }
    stages = [Stage(s, m.flops[on][s], m.saved[on][s], how[s]) for s in STAGES]
    total = sum(m.flops[on].values())
    transient = [f"twice the largest tensor one op makes in the step ({fmt_bytes(m.largest_tensor[on])}: it and "
                 "its gradient)"]
    if recompute:
        transient.insert(0, f"the largest checkpointed block recomputed in the backward pass ({m.largest_unit[0]}: "
                            f"{fmt_bytes(recompute)}, what it saves without checkpointing)")
    assumptions = [
        "FLOPs: torch's FlopCounterMode (matrix multiplies, convolutions, attention); elementwise ops are not "
        "counted; the time floor runs every counted FLOP at the peak rate",
        f"prompt encoding ({fmt_flops(m.encode_flops)}) runs once per prompt: not in the step",
        "attention as a GPU's fused kernels run it (flash for unmasked bf16 / fp16, memory-efficient otherwise): "
        "their FLOPs, and no attention matrix kept",
        "saved activations: every tensor autograd saves for the backward pass, once per storage, weights "
        "excluded; with checkpointing on, what the models' own checkpointing keeps",
        "transient: " + " + ".join(transient),
        f"on the GPU during the step: {', '.join(c.name for c in resident)}, all on one GPU; LoRA weights, "
        "gradients and AdamW moments in fp32",
        "encoding a prompt: every model on the GPU (the text encoders visit it while the others wait there) + "
        "twice the largest tensor of the encoders' no-grad forward",
        "not included: the CUDA context and the allocator's cached blocks (max_memory_reserved exceeds "
        f"max_memory_allocated): 'fits' leaves {HEADROOM_GIB:g} GiB for them",
        "sequence lengths: the text encoders' as the pipeline pads them; the VLM's question tokenised by the random "
        "build's small BPE tokenizer (a few tokens off the real tokenizer's count; the image tokens are exact)",
        f"{m.tokens['vlm rows']} question, one VLM row per question (--keep-prompt adds one)",
    ]
    if m.base_weights != "bf16":
        assumptions.append(
            f"{m.base_weights}: torchao weight-only quantisation of the nn.Linear weights of the transformer"
            f"{' and the VLM' if m.quantize_vlm else ''}, run on meta: each such layer used with gradient saves its "
            "dequantised weight for the backward pass (counted above; checkpointing drops them with the rest); "
            "FLOPs are those of the bf16 matmuls")
    return CostReport(
        preset=preset.name, size=m.size, checkpointing=on, text_encoders=text_encoders, base_weights=m.base_weights,
        quantize_vlm=m.quantize_vlm, peak_tflops=peak_tflops, steps=preset.steps, components=m.components,
        stages=stages, flops_per_step=total, floor_s=preset.steps * total / (peak_tflops * 1e12),
        saved_bytes={"on": sum(m.saved[True].values()), "off": sum(m.saved[False].values())}, memory=memory,
        peak_bytes=sum(memory.values()), encode_peak_bytes=encode_peak, lora_parameters=m.lora_parameters,
        tokens=m.tokens, assumptions=assumptions)


def memory_plans(preset: Preset, size: int | None = None, base_weights: tuple[str, ...] = ("bf16", "int8"),
                 quantize_vlm: bool = False, peak_tflops: float = DEFAULT_PEAK_TFLOPS) -> list[CostReport]:
    """One report per memory plan: checkpointing on / off x text encoders gpu / offload x `base_weights` (one
    meta measurement per base-weights kind)."""
    out = []
    for kind in base_weights:
        m = measure(preset, size, kind, quantize_vlm)
        out += [estimate(preset, checkpointing=on, text_encoders=te, peak_tflops=peak_tflops, measurement=m)
                for on in (True, False) for te in TEXT_ENCODERS]
    return sorted(out, key=lambda r: (not r.checkpointing, r.text_encoders, r.base_weights))


def plans_table(reports: list[CostReport]) -> str:
    """Memory plans as a markdown table: predicted GiB of the step and of encoding a prompt, and which cards the
    run (the higher of the two) fits with `HEADROOM_GIB` to spare."""
    lines = ["| checkpointing | text encoders | base weights | step peak (GiB) | encoding a prompt (GiB) | "
             + " | ".join(f"{g} GiB" for g in GPU_SIZES_GIB) + " |",
             "|" + " --- |" * (5 + len(GPU_SIZES_GIB))]
    for r in reports:
        lines.append(f"| {r.mode} | {r.text_encoders} | {r.base_weights}{' + VLM' if r.quantize_vlm else ''} | "
                     f"{r.peak_bytes / GIB:.1f} | {r.encode_peak_bytes / GIB:.1f} | "
                     + " | ".join("fits" if r.fits(g) else "no" for g in GPU_SIZES_GIB) + " |")
    return "\n".join(lines)
