"""`python -m pipelines.self_reward`: the command line of `pipelines/self_reward.py` (usage: its docstring)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from .. import files
from ..checks import check_learning_rate, check_output, check_output_dir, check_pivots
from ..refine import check_n
from ..self_reward import pivot_pairs, read_prompts, self_improve
from . import cli


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("Self-rewarding rounds: refine, judge, keep best/worst pairs, DPO on the VLM.")
    cli.add_model_args(parser)
    parser.add_argument("--prompts", required=True, help="text file, one prompt per line")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--n", type=int, default=8, help="candidates per prompt")
    parser.add_argument("--epochs", type=int, help="DPO epochs over a round's pairs (default: the preset's)")
    parser.add_argument("--lr", type=float, help="DPO learning rate (default: the preset's)")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--out", default="self_reward", help="folder for pairs (JSONL) and the VLM LoRA")
    parser.add_argument("--pivot-pairs", metavar="FILE",
                        help="also write (pivot image, winning system prompt) pairs here (.jsonl; PNGs beside it)")
    parser.add_argument("--pivots", type=int, default=4, help="with --pivot-pairs: images the pivot is chosen from")
    args = parser.parse_args(argv)
    with cli.errors_as_messages():
        prompts = read_prompts(args.prompts)
        if not 1 <= args.rounds <= 10:
            raise ValueError(f"rounds {args.rounds} must be between 1 and 10")
        if args.epochs is not None and args.epochs < 1:
            raise ValueError(f"epochs {args.epochs} must be at least 1")
        if not 0 < args.beta < float("inf"):  # NaN fails the comparison too
            raise ValueError(f"--beta {args.beta} must be a positive number (DPO's temperature, 0.1 by default)")
        if args.lr is not None:
            check_learning_rate(args.lr)
        check_n(args.n)
        check_output_dir(args.out, "--out")
        if args.pivot_pairs:
            check_output(args.pivot_pairs, (".jsonl",), "--pivot-pairs")
            check_pivots(args.pivots)
        generator, vlm = cli.load_models(args, cli.preset_from_args(args))
        if args.pivot_pairs:  # before the rounds: the VLM as loaded writes from the pivots
            written = pivot_pairs(generator, vlm, prompts, args.pivot_pairs, n=args.n, pivots=args.pivots)
            print(f"pivot pairs: {len(written)} in {args.pivot_pairs} (pivot images beside it)")
        truth = generator.preset.analytic_scores
        out, lora, figures = Path(args.out), None, []
        for round_ in range(1, args.rounds + 1):  # each round starts from the LoRA of the one before
            done = self_improve(generator, vlm, prompts, out / f"round{round_}", n=args.n, seed=round_ * 1000,
                                epochs=args.epochs, lr=args.lr, beta=args.beta, init_from=lora, truth=truth)
            lora = done.lora
            figures.append(asdict(done))
            print(f"round {round_}: " + "\n  ".join(done.lines()), flush=True)
        files.write_text(out / "rounds.json", json.dumps(figures, indent=1) + "\n")
        print(f"use it: python -m pipelines.refine --preset {args.preset} --vlm-lora {lora} --prompt ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
