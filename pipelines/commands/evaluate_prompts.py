"""`python -m pipelines.evaluate_prompts`: the command line of `pipelines/evaluate_prompts.py` (usage:
its docstring)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict

from ..checks import check_int, check_learning_rate, check_output_dir, check_prompt
from ..evaluate_prompts import (
    DRAW,
    PAPER,
    TASKS,
    contact_sheet,
    dpo_table,
    held_out,
    image_seeds,
    pivot_table,
    recreate_table,
    refine_table,
    run_dpo,
    run_pivot,
    run_recreate,
    run_refine,
)
from ..files import replacing, write_text
from ..refine import vlm_adapter
from . import cli


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("Measure prompt refinement, image pivots, image-to-prompt and self-rewarding DPO against the "
                        "toy world's analytic truth.")
    parser.add_argument("task", choices=TASKS)
    cli.add_model_args(parser)
    parser.add_argument("--draw", type=int, default=DRAW, help="held-out prompts and seeds are drawn from this seed")
    parser.add_argument("--prompts", help="prompts separated by ';' (default: the 8 scenes and 4 drawn combinations)")
    parser.add_argument("--seeds", type=int, default=3, help="image seeds per prompt")
    parser.add_argument("--images", type=int, default=32, help="recreate: images to recreate")
    parser.add_argument("--rounds", type=int, default=2, help="dpo: self-rewarding rounds")
    parser.add_argument("--train-prompts", type=int, default=16, help="dpo: prompts each round learns from")
    parser.add_argument("--lr", type=float, help="dpo: DPO's learning rate (default: the preset's)")
    parser.add_argument("--epochs", type=int, help="dpo: DPO's epochs over each round's pairs (default: the preset's)")
    parser.add_argument("--vlm-lora", help="refine, pivot, recreate: a VLM LoRA folder (from self_reward) to use")
    parser.add_argument("--out-dir", required=True, help="folder for results.json, table.md and contact-sheet.png")
    args = parser.parse_args(argv)
    with cli.errors_as_messages():
        preset = cli.preset_from_args(args)
        if not preset.known_scenes:
            raise ValueError(f"preset {preset.name!r} has no analytic truth: the prompt evaluations run on a toy "
                             f"world (--preset toy)")
        args.lr = check_learning_rate(args.lr if args.lr is not None else preset.dpo_learning_rate)
        args.epochs = args.epochs if args.epochs is not None else preset.dpo_epochs
        for name, lo, hi in (("seeds", 1, 16), ("images", 1, 256), ("rounds", 1, 5), ("train_prompts", 2, 256),
                             ("epochs", 1, 100)):
            check_int(getattr(args, name), "--" + name.replace("_", "-"), lo, hi)
        prompts = [check_prompt(p) for p in args.prompts.split(";")] if args.prompts else held_out(args.draw)
        out_dir = check_output_dir(args.out_dir)
        generator, vlm = cli.load_models(args, preset)
        seeds = image_seeds(args.draw, args.seeds)
        start = time.perf_counter()
        with vlm_adapter(vlm, args.vlm_lora if args.task != "dpo" else None):
            if args.task == "refine":
                summary, cases, sheet = run_refine(generator, vlm, prompts, seeds, args.draw)
                table, labels = refine_table(summary), prompts
            elif args.task == "pivot":
                summary, cases, sheet = run_pivot(generator, vlm, prompts, seeds, args.draw)
                table, labels = pivot_table(summary), prompts
            elif args.task == "recreate":
                summary, cases, sheet = run_recreate(generator, vlm, args.draw, args.images)
                table, labels = recreate_table(summary), [c["prompt"] for c in cases[:len(sheet)]]
            else:
                summary, cases, sheet = run_dpo(generator, vlm, prompts, seeds, args.draw, out_dir, args.rounds,
                                                args.train_prompts, epochs=args.epochs, lr=args.lr)
                table, labels = dpo_table(summary), [f"round {r}" for r in range(len(sheet))]
        command = "python -m pipelines.evaluate " + " ".join(sys.argv[1:] if argv is None else argv)
        record = {"task": args.task, "summary": summary, "paper": PAPER[args.task], "preset": preset.name,
                  **({"lr": args.lr, "epochs": args.epochs} if args.task == "dpo" else {}),
                  "draw": args.draw, "prompts": prompts, "seeds": seeds, "vlm_lora": args.vlm_lora,
                  "seconds": round(time.perf_counter() - start, 1), "command": command,
                  "cases": [c if isinstance(c, dict) else asdict(c) for c in cases]}
        write_text(out_dir / "results.json", json.dumps(record, indent=1) + "\n")
        write_text(out_dir / "table.md", table)
        with replacing(out_dir / "contact-sheet.png") as tmp:
            contact_sheet(sheet, labels).save(tmp, format="PNG")
        print(table)
        print(f"wrote {out_dir / 'results.json'}, table.md and contact-sheet.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
