"""Seconds per optimization step, seconds per generation, peak memory, for a preset and resolution.

    python -m pipelines.bench --preset tiny
    python -m pipelines.bench --preset flux-schnell --random-weights --size 512    # on a GPU, no download
    python -m pipelines.bench --cost --preset flux-schnell --size 512 [--json cost.json]   # a CPU, seconds
    python -m pipelines.bench --cost --memory-plans --preset flux-schnell              # the plans' table

`--random-weights` builds the preset's full-size architectures from configs in `random_models.py`:
time and memory do not depend on the weights' values. `--cost` builds them on the meta device instead and
counts ONE optimisation step of our code (`pipelines/cost.py`): FLOPs by stage, the time floor at
`--peak-tflops`, saved activations with checkpointing on and off, and a predicted peak of GPU memory under the
memory plan (`--checkpointing`, `--text-encoders`, `--base-weights`, `--quantize-vlm`): a prediction, nothing
runs on a GPU.
"""

from __future__ import annotations

import resource
import sys

import torch

from . import cost

QUESTION = cost.QUESTION  # the one question a timed step asks (and a counted one)


def peak_memory_gb() -> dict[str, float]:
    if torch.cuda.is_available():
        return {"gpu_allocated_gb": torch.cuda.max_memory_allocated() / 2**30,
                "gpu_reserved_gb": torch.cuda.max_memory_reserved() / 2**30}
    # ru_maxrss is in KiB on Linux: the process's peak resident memory.
    return {"cpu_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


if __name__ == "__main__":  # the command lives in pipelines/commands/bench.py
    from .commands.bench import main

    sys.exit(main())
