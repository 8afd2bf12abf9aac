"""Generate one image, optionally with a learned LoRA at a given scale.

    python -m pipelines.generate --preset tiny --prompt "a desert" --lora beach.safetensors \
        --scale 1.0 --seed 3 --out desert.png
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # the command lives in pipelines/commands/generate.py
    from .commands.generate import main

    sys.exit(main())
