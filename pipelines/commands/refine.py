"""`python -m pipelines.refine`: the command line of `pipelines/refine.py` (usage: its docstring)."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import reports
from ..checks import MAX_CANDIDATES, MAX_PIVOTS, check_output_dir, check_pivots, check_prompt, check_seed
from ..refine import Candidate, check_n, check_sampling, check_vlm_lora, pivot, recreate, refine
from . import cli


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("Refine a prompt with the preset's VLM (self-rewarding text rewrites, or through an image "
                        "pivot), or write one from an image.")
    cli.add_model_args(parser)
    parser.add_argument("--prompt", help="the short prompt to refine")
    parser.add_argument("--image", help="write a prompt from this image instead (image-to-prompt)")
    parser.add_argument("--mode", choices=("text", "pivot"), default="text",
                        help="text: the VLM rewrites the prompt (default); pivot: through the best of --pivots "
                             "images of it (PRIP)")
    parser.add_argument("--n", type=int, default=8, help=f"candidates, 1 to {MAX_CANDIDATES}")
    parser.add_argument("--pivots", type=int, default=4,
                        help=f"--mode pivot: images of the prompt the pivot is chosen from, 1 to {MAX_PIVOTS}")
    parser.add_argument("--temperature", type=float, default=0.9)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0, help="image seed, the same for every candidate")
    parser.add_argument("--vlm-lora", help="LoRA folder of the VLM from pipelines.self_reward")
    parser.add_argument("--out-dir", help="save every candidate's image here")
    args = parser.parse_args(argv)
    with cli.errors_as_messages():
        if (args.prompt is None) == (args.image is None):
            raise ValueError("give either --prompt or --image")
        if args.image is not None and args.mode == "pivot":
            raise ValueError("--mode pivot refines a --prompt; --image writes a prompt from an image")
        if args.prompt is not None:
            check_prompt(args.prompt)
            check_n(args.n)
            check_sampling(args.temperature, args.top_p)
        if args.mode == "pivot":
            check_pivots(args.pivots)
        check_seed(args.seed)
        if args.out_dir:
            check_output_dir(args.out_dir)
        if args.vlm_lora:
            check_vlm_lora(args.vlm_lora)
        image = cli.load_upload(args.image) if args.image else None
        generator, vlm = cli.load_models(args, cli.preset_from_args(args))
        named: list[tuple[str, Candidate]] = []  # (file name, row) for --out-dir
        if image is not None:
            candidate, closeness = recreate(generator, vlm, image, args.seed)
            print(f"prompt: {candidate.prompt}{' [cut]' if candidate.truncated else ''}\n"
                  f"similarity to the original: {closeness:.3f}")
            rows = [candidate]
        elif args.mode == "pivot":
            result = pivot(generator, vlm, args.prompt, args.n, args.pivots, args.temperature, args.top_p,
                           seed=args.seed, image_seed=args.seed, vlm_lora=args.vlm_lora, reasons=True)
            print(reports.format_pivot_table(result))
            print(reports.winner_line(result.rows))
            rows = result.rows
            named.append((f"00-pivot-seed{result.pivot.seed}.png", result.pivot))
        else:
            rows = refine(generator, vlm, args.prompt, args.n, args.temperature, args.top_p, seed=args.seed,
                          image_seed=args.seed, vlm_lora=args.vlm_lora, reasons=True)
            print(reports.format_table(rows))
            print(reports.winner_line(rows))
        named += [(f"{i:02d}{'-baseline' if r.baseline else ''}.png", r) for i, r in enumerate(rows, 1)]
        if args.out_dir:
            Path(args.out_dir).mkdir(parents=True, exist_ok=True)
            for name, r in named:
                r.image.save(Path(args.out_dir) / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
