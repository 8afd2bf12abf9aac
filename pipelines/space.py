"""A Hugging Face Space made from this repository: the same files, with requirements a ZeroGPU Space can install.

    python -m pipelines.space --out DIR      # then push DIR to the Space's repository (git, or `hf upload`)

A Space installs the root `requirements.txt`. ZeroGPU supports torch 2.8 to 2.11, while this project pins 2.13,
the CPU wheel its machines and CI test. The Space's requirements are the repository's with torch pinned to
`SPACE_TORCH` and ZeroGPU's `spaces` package added; nothing else differs, because they are made from the one file
(`tests/test_space.py` checks it). torch 2.11 is the oldest version the code is checked on: the quick suite passes
there (README, "On a Space"); 2.8 to 2.10 cannot import the pinned torchao.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

SPACE_TORCH = "2.11.0"  # the newest torch ZeroGPU supports, and the oldest this code is checked on
SPACES_PACKAGE = "spaces==0.51.3"  # the same pin as requirements-test.txt: the tests run its decorator
LEFT_OUT = ("tests/", ".ci/", "requirements-test.txt")  # what a Space does not run


def requirement_name(line: str) -> str | None:
    """The package a requirements line names ('gradio[mcp]==6.31.0  # ...' -> 'gradio'), None for a comment."""
    match = re.match(r"\s*([A-Za-z0-9_.-]+)", line.split("#")[0])
    return match.group(1).lower().replace("_", "-") if match else None


def space_requirements(text: str) -> str:
    """The repository's requirements with torch pinned for ZeroGPU and the `spaces` package added."""
    lines = text.splitlines()
    torch_lines = [i for i, line in enumerate(lines) if requirement_name(line) == "torch"]
    if len(torch_lines) != 1:
        raise ValueError("requirements.txt must pin torch on exactly one line")
    lines[torch_lines[0]] = f"torch=={SPACE_TORCH}  # ZeroGPU supports 2.8-2.11 (pipelines/space.py)"
    return "\n".join([*lines, f"{SPACES_PACKAGE}  # ZeroGPU's decorator (studio/gpu.py)"]) + "\n"


def space_files(root: Path) -> list[str]:
    """The repository's tracked files a Space needs (not the tests or CI)."""
    listed = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    return [f for f in listed.splitlines() if f and not f.startswith(LEFT_OUT)]


def write_space(root: Path, out: Path) -> list[str]:
    """Copy the Space's files from `root` into the empty folder `out`; returns them."""
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {str(out)!r} is not empty: give a new or empty folder")
    files = space_files(root)
    for name in files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, out / name)
    (out / "requirements.txt").write_text(space_requirements((root / "requirements.txt").read_text()))
    return files


if __name__ == "__main__":  # the command lives in pipelines/commands/space.py
    from .commands.space import main

    sys.exit(main())
