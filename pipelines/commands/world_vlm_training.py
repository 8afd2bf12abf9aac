"""`python -m pipelines.world_vlm_training`: the command line of `pipelines/world_vlm_training.py`
(usage: its docstring)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import world
from ..loading import load_generator, load_vlm
from ..presets import get_preset
from ..world_training import EVAL_SEEDS, TRAIN_SEED, generated
from ..world_vlm_training import (
    FRESH,
    FRESH_TASKS,
    aux_items,
    build_vlm,
    depth_aux_items,
    fooling_round,
    gates,
    image_rows,
    save_vlm,
    seen,
    textured,
    train,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train the toy world's VLM.")
    parser.add_argument("--generator", required=True, type=Path, help="the trained generator folder")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--minutes", type=float, default=25.0)
    parser.add_argument("--rounds", type=int, default=2, help="hardening rounds")
    parser.add_argument("--loras", type=int, default=6, help="LoRAs trained against the judge per round")
    parser.add_argument("--images", type=int, default=1500, help="rendered and generated training images, each")
    parser.add_argument("--held-out", type=int, default=64, help="held-out rendered and generated images, each")
    parser.add_argument("--resume", type=Path, help="go on training this VLM folder instead of a new one")
    parser.add_argument("--focus", type=float, default=0.0,
                        help="share of each image batch drawn anew (`fresh_rows`): controls' questions and rubrics")
    parser.add_argument("--scores", type=int, default=0,
                        help="rubric digits per image batch trained directly (`score_loss`), besides written verdicts")
    parser.add_argument("--fresh", help="shares of the fresh rows by task, e.g. 'rubric=0.5,horizon=0.2' (tasks: "
                                        f"{', '.join(FRESH_TASKS)}; default: FRESH)")
    parser.add_argument("--textured", type=float, default=0.0,
                        help="add this share of the pool again under the textures hacked LoRAs paint (`textured`), "
                             "read by the truth like any image: fresh rows and rubric digits learn that they cost")
    parser.add_argument("--paired-scores", action="store_true",
                        help="train the rubric digits in pairs: one image scored for a prompt it shows and one it "
                             "does not, so the alignment digit must read the prompt")
    parser.add_argument("--depth-probe", action="store_true",
                        help="also train a probe on where Point A and Point B are and which is closer")
    return parser


def fresh_shares(parser: argparse.ArgumentParser, text: str | None) -> dict[str, float]:
    """--fresh as {task: share} (FRESH without it); a bad value ends the command in one line."""
    if not text:
        return dict(FRESH)
    try:
        shares = {k.strip(): float(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        parser.error(f"--fresh {text!r} must be 'task=share,...', e.g. 'rubric=0.5,horizon=0.2'")
    unknown = set(shares) - set(FRESH_TASKS)
    if unknown:
        parser.error(f"--fresh: unknown task {sorted(unknown)[0]!r}")
    return shares


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    shares = fresh_shares(parser, args.fresh)
    torch.set_num_threads(2)
    start = time.perf_counter()
    preset = dataclasses.replace(get_preset("toy"), generator_source=str(args.generator.resolve()))
    generator = load_generator(preset, "cpu")
    rng = np.random.default_rng(TRAIN_SEED + 20)
    rendered = [(world.render(s), s) for s in (world.sample(rng) for _ in range(args.images))]
    prompts = [world.sample_prompt(rng, float(rng.uniform(0, 1)))[0] for _ in range(args.images)]
    made = generated(generator.pipe, prompts, list(range(TRAIN_SEED + 10**5, TRAIN_SEED + 10**5 + len(prompts))))
    pool = rendered + [(Image.fromarray(im), None) for im in made]
    held_rng = np.random.default_rng(EVAL_SEEDS + 20)
    held_prompts = [world.sample_prompt(held_rng, 0.5)[0] for _ in range(args.held_out)]
    held_seeds = list(range(EVAL_SEEDS + 10**5, EVAL_SEEDS + 10**5 + args.held_out))
    held = [(world.render(s), s) for s in (world.sample(held_rng) for _ in range(args.held_out))] + [
        (Image.fromarray(im), None) for im in generated(generator.pipe, held_prompts, held_seeds)]
    print(f"{len(pool)} training images, {len(held)} held out, in {time.perf_counter() - start:.0f}s", flush=True)
    if args.resume:
        vlm = load_vlm(dataclasses.replace(preset, vlm_source=str(args.resume.resolve())), "cpu")
    else:
        vlm = build_vlm(TRAIN_SEED)
    rows_rng = np.random.default_rng(TRAIN_SEED + 30)
    rows, aux, items = image_rows(rows_rng, pool), aux_items(rows_rng, pool), seen(pool)
    if args.textured:  # fresh rows and digits only: the cached rows stay the clean pictures
        tex_rng = np.random.default_rng(TRAIN_SEED + 32)
        picked = tex_rng.choice(len(pool), size=round(args.textured * len(pool)), replace=False)
        items += seen([(textured(tex_rng, pool[i][0]), None) for i in picked])
    depth_aux = depth_aux_items(np.random.default_rng(TRAIN_SEED + 31), items) if args.depth_probe else None
    print(f"{len(rows)} rows in {time.perf_counter() - start:.0f}s", flush=True)
    report: dict = {"pool": len(pool), "held_out": len(held), "rounds": [], "resumed_from": str(args.resume or ""),
                    "focus": args.focus, "fresh": shares, "scores": args.scores, "depth_probe": args.depth_probe,
                    "textured": args.textured, "paired_scores": args.paired_scores}
    first = 60 * args.minutes * (0.7 if args.rounds else 1.0)
    report["train"] = train(vlm, rows, first, seed=TRAIN_SEED + 7 * bool(args.resume), aux=aux, focus=args.focus,
                            items=items, shares=shares, scores=args.scores, depth_aux=depth_aux,
                            paired=args.paired_scores)
    print(report["train"], flush=True)
    for round_ in range(1, args.rounds + 1):
        fooled, images = fooling_round(vlm, generator, args.loras, seed=1000 * round_)
        rows += image_rows(rows_rng, [(im, None) for im in images] * 3)
        aux += aux_items(rows_rng, [(im, None) for im in images])
        items += seen([(im, None) for im in images])
        more = train(vlm, rows, 60 * args.minutes * 0.3 / args.rounds, seed=TRAIN_SEED + round_, aux=aux,
                     focus=args.focus, items=items, shares=shares, scores=args.scores, depth_aux=depth_aux,
                            paired=args.paired_scores)
        report["rounds"].append({"fooled_before": round(fooled, 3), "images_added": len(images), "train": more})
        print(report["rounds"][-1], flush=True)
    report["fooled_after"] = round(fooling_round(vlm, generator, args.loras, seed=9000)[0], 3)  # as saved
    report["gates"] = gates(vlm, held, EVAL_SEEDS)
    report["seconds"] = round(time.perf_counter() - start, 1)
    save_vlm(vlm, args.out / "vlm")
    (args.out / "vlm-training.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(json.dumps(report["gates"], indent=1, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
