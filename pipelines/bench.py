"""Seconds per optimization step, seconds per generation, peak memory, for a preset and resolution.

    python -m pipelines.bench --preset tiny
    python -m pipelines.bench --preset flux-schnell --random-weights --size 512    # on a GPU, no download
    python -m pipelines.bench --suite gpu --out-dir DIR [--wheels .wheels]         # the GPU benchmark, one call
    python -m pipelines.bench --suite gpu --dry-run --out-dir DIR                  # its rehearsal on a CPU
    python -m pipelines.bench --cost --preset flux-schnell --size 512 [--json cost.json]   # a CPU, seconds
    python -m pipelines.bench --cost --memory-plans --preset flux-schnell              # the plans' table

`--random-weights` builds the preset's full-size architectures from configs in `random_models.py`:
time and memory do not depend on the weights' values. `--cost` builds them on the meta device instead and
counts ONE optimisation step of our code (`pipelines/cost.py`): FLOPs by stage, the time floor at
`--peak-tflops`, saved activations with checkpointing on and off, and a predicted peak of GPU memory under the
memory plan (`--checkpointing`, `--text-encoders`, `--base-weights`, `--quantize-vlm`): a prediction, nothing
runs on a GPU.

`--suite gpu` is the project's GPU benchmark: `GPU_SUITE` below, each run in a process of its own (a failure or an
out-of-memory ends that run alone, and each peak is its own), most important first, inside one wall-clock budget
that fits one call of a lent device; every row carries the cost model's prediction beside the measured figure.
The device image has torch but not diffusers: `--wheels DIR` installs the wheels carried there first
(`--download-wheels DIR` fetches them here). `--dry-run` rehearses the same runs on the CPU with the tiny preset.
This module imports nothing heavier than torch, so the suite starts where diffusers is not installed yet.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

QUESTION = [("Is the horizon of the scene aligned with the red line? Answer with Yes or No.", "Yes")]
"""The one question a timed step asks (and a counted one, `pipelines.cost`)."""


def peak_memory_gb() -> dict[str, float]:
    if torch.cuda.is_available():
        return {"gpu_allocated_gb": torch.cuda.max_memory_allocated() / 2**30,
                "gpu_reserved_gb": torch.cuda.max_memory_reserved() / 2**30}
    # ru_maxrss is in KiB on Linux: the process's peak resident memory.
    return {"cpu_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@dataclass(frozen=True)
class SuiteRun:
    """One configuration of the GPU benchmark: a preset at 512 px with full-size random weights."""

    name: str
    preset: str
    base_weights: str  # "bf16" or "int8" (torchao, weight-only)
    checkpointing: bool
    compile: bool = False
    limit_s: int = 150  # this run's wall-clock limit on the device, load and compile included

    @property
    def plan(self) -> str:
        """What the cost model's prediction depends on (compile does not change it)."""
        return f"{self.preset} {self.base_weights} checkpointing {'on' if self.checkpointing else 'off'}"

    def plan_args(self, dry_run: bool = False) -> list[str]:
        return ["--preset", REHEARSAL[self.preset] if dry_run else self.preset, "--base-weights", self.base_weights,
                "--checkpointing", "on" if self.checkpointing else "off"]

    def bench_args(self, dry_run: bool = False) -> list[str]:
        """The `python -m pipelines.bench` arguments of this run. On a CPU rehearsal: its family's tiny preset, few
        steps, and the prediction counted in the run (on the device it comes from `SUITE_PREDICTIONS`, counted here:
        a Flux plan takes a CPU about a minute)."""
        timing = ["--steps", "2", "--warmup", "1", "--generations", "1", "--predict"] if dry_run else [
            "--steps", "10", "--warmup", "3", "--generations", "3", "--random-weights", "--size", str(SUITE_SIZE)]
        return [*self.plan_args(dry_run), *timing] + (["--compile"] if self.compile else [])


REHEARSAL = {"flux-schnell": "tiny", "flux-dev": "tiny-dev", "sana": "tiny-sana"}  # the same family, tiny, on a CPU
SUITE_SIZE = 512
SUITE_PREDICTIONS = Path(__file__).resolve().parents[1] / "assets" / "bench" / "gpu-suite-predictions.json"
SUITE_BUDGET_S = 470  # one device call is at most 600 s; the wheels' install and the start come first
# Most important first: if the budget runs out, what ran answers the first questions. The default plan of the
# flagship, then each factor against it (weights, checkpointing, compile), then the other families.
GPU_SUITE = (
    SuiteRun("flux-schnell int8 ckpt", "flux-schnell", "int8", True),
    SuiteRun("flux-schnell bf16 ckpt", "flux-schnell", "bf16", True),
    SuiteRun("flux-schnell bf16", "flux-schnell", "bf16", False),
    SuiteRun("sana bf16 ckpt", "sana", "bf16", True, limit_s=100),
    SuiteRun("flux-dev bf16 ckpt", "flux-dev", "bf16", True),
    SuiteRun("flux-schnell bf16 ckpt compile", "flux-schnell", "bf16", True, compile=True, limit_s=240),
    SuiteRun("sana bf16", "sana", "bf16", False, limit_s=100),
    SuiteRun("flux-schnell int8", "flux-schnell", "int8", False),
    SuiteRun("sana int8 ckpt", "sana", "int8", True, limit_s=100),
    SuiteRun("flux-dev int8 ckpt", "flux-dev", "int8", True),
    SuiteRun("sana bf16 ckpt compile", "sana", "bf16", True, compile=True, limit_s=180),
)
# What the lent device's image lacks or holds at other versions (it has torch 2.11, transformers 5.17, accelerate,
# huggingface_hub; not diffusers or torchao), at this machine's pins: pure Python, or torchao's abi3 wheel.
CARRIED = ("diffusers", "transformers", "peft", "torchao", "importlib_metadata")

SUITE_COLUMNS = ("run", "s/step", "s/100 steps", "s/generation", "peak GiB", "predicted peak GiB",
                 "predicted floor s/step", "load s", "device")


def suite_row(run: SuiteRun, figures: dict[str, object] | None, failure: str = "",
              predicted: dict[str, float] | None = None) -> list[str]:
    """One table row: the measured figures beside the cost model's prediction (the run's own, else `predicted`),
    or why there are none."""
    if figures is None:
        return [run.name, f"not measured: {failure}", *[""] * (len(SUITE_COLUMNS) - 2)]
    peak = figures.get("gpu_allocated_gb", figures.get("cpu_peak_rss_gb"))
    predicted = figures.get("predicted") or predicted or {}
    return [run.name, f"{figures['s_per_step_median']:.3f}", f"{figures['s_per_100_steps']:.1f}",
            f"{figures['s_per_generation_median']:.3f}", f"{peak:.2f}" if peak is not None else "",
            f"{predicted['peak_gib']:.2f}" if predicted else "", f"{predicted['floor_s_per_step']:.4f}" if predicted
            else "", f"{figures['load_s']:.0f}", str(figures.get("device", ""))]


def suite_table(rows: list[list[str]]) -> str:
    """The suite's Markdown table."""
    lines = ["| " + " | ".join(SUITE_COLUMNS) + " |", "|" + " --- |" * len(SUITE_COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


if __name__ == "__main__":  # the commands live in pipelines/commands/ (the suite's without diffusers: see above)
    if "--suite" in sys.argv[1:] or "--download-wheels" in sys.argv[1:]:
        from .commands.bench_suite import main
    else:
        from .commands.bench import main

    sys.exit(main())
