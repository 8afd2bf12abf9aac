"""`python -m pipelines.world_training`: the command line of `pipelines/world_training.py` (usage: its docstring)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffusers import FluxPipeline

from ..world_training import STAGES, contact_sheet, parse_minutes, train_generator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["generator", "sheet"],
                        help="generator: train it; sheet: OUT/contact-sheet.png of OUT/generator on unseen seeds")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--minutes", default="", help="budgets per stage, e.g. vae=12,decoder=6,onestep=18,objects=12")
    parser.add_argument("--until", choices=STAGES, default=STAGES[-1], help="stop after this stage")
    args = parser.parse_args(argv)
    if args.what == "sheet":

        contact_sheet(FluxPipeline.from_pretrained(args.out / "generator")).save(args.out / "contact-sheet.png")
        return 0
    train_generator(args.out, parse_minutes(args.minutes), args.until)
    return 0


if __name__ == "__main__":
    sys.exit(main())
