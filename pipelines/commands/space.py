"""`python -m pipelines.space`: the command line of `pipelines/space.py` (usage: its docstring)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..space import SPACE_TORCH, write_space
from .oneline import fail, parser

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    p = parser("Write a folder to push to a Hugging Face ZeroGPU Space: this repository's files, with torch pinned "
               f"to {SPACE_TORCH} and the spaces package in requirements.txt.")
    p.add_argument("--out", required=True, help="a new or empty folder")
    args = p.parse_args(argv)
    try:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        files = write_space(ROOT, out)
    except (ValueError, OSError, subprocess.CalledProcessError) as exc:
        fail(str(exc))
    print(f"wrote {len(files)} files to {out} (requirements.txt: torch=={SPACE_TORCH}, spaces); push them to the "
          "Space's repository and choose ZeroGPU hardware in its settings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
