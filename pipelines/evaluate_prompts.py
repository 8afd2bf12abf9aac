"""Measure the prompt half against its papers, with the toy world's analytic aesthetic and alignment as the truth.

    python -m pipelines.evaluate refine --preset toy --out-dir eval/refine
    python -m pipelines.evaluate pivot --preset toy --out-dir eval/pivot
    python -m pipelines.evaluate recreate --preset toy --out-dir eval/recreate
    python -m pipelines.evaluate dpo --preset toy --out-dir eval/dpo

Every task draws its held-out prompts and seeds from `--draw` (a seed no training used): the eight scenes alone plus
short combinations of a scene and one or two attributes. The toy world's training drew its prompts afresh from the
whole grammar, so no combination is strictly unseen; these are drawn where no tuning looked. The truth of an image
for a user's prompt is the mix the judge's rubrics were taught, `world.preference` = 0.5 x aesthetic + 2.5 x
alignment (0-5): aesthetic = `world.aesthetic` (0-5), alignment = `world.alignment` against the user's prompt (0-1).

- refine (Yang et al. 2025, self-rewarding): the raw prompt against the best of N rewrites (N = 1, 4, 8, 16) chosen by
  the VLM's own rubric scores; beside it the pick a random choice and the analytic oracle would make.
- pivot (PRIP, Zhan et al. 2024): text rewriting against refinement through an image pivot at equal generations.
- recreate (VDPO's image -> prompt): image -> prompt -> image, attributes and horizon of the two compared.
- dpo: self-rewarding rounds (pairs from the model's own samples and verdicts, DPO on a LoRA of the VLM, again from
  the new model); per round the analytic quality of the rewriter's samples and the judge's pairwise accuracy.

Each writes `DIR/results.json` (a `summary` object and every case), `DIR/table.md` and `DIR/contact-sheet.png`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import world
from .refine import Candidate, image_to_prompt, pivot, propose, ranked, score_all, similarity, vlm_adapter
from .self_reward import preference_pairs, rewrite_quality, train_dpo
from .world_training import EVAL_SEEDS

TASKS = ("refine", "pivot", "recreate", "dpo")
BEST_OF = (1, 4, 8, 16)
DRAW = 2026  # the default --draw: no training or tuning used it
COMBINATIONS = 4  # held-out prompts naming a scene and one or two attributes, beside the eight scenes alone
PAPER = {  # the figures each paper reports, set beside ours in EVALUATION.md
    "refine": "Yang et al. 2025: best-of-N by the model's own scores beats the raw prompt",
    "dpo": "Yang et al. 2025: DPO model wins about 55 % against SFT; judge accuracy 48.0 -> 66.1 -> 66.4 % (Table 5)",
    "pivot": "Zhan et al. 2024 (PRIP): refining through an image pivot beats direct rewriting",
    "recreate": "VDPO: a prompt written from an image regenerates a similar image",
}


@dataclass
class Scored:
    """One generated image of a prompt: what the VLM judged and what the toy world measures."""

    prompt: str
    judged: float  # the VLM's combined rubric score (mean of aesthetic, alignment, preference), 0-5
    aesthetic: float  # analytic, 0-5
    alignment: float  # analytic, 0-1: the fraction of the *user's* prompt's attributes the image shows
    scores: dict[str, float | None] = field(default_factory=dict)  # the judge's rubric scores and VQAScore

    @property
    def truth(self) -> float:
        return world.preference(self.aesthetic, self.alignment)


def scored(candidate: Candidate, user_prompt: str) -> Scored:
    return Scored(candidate.prompt, candidate.combined, world.aesthetic(candidate.image),
                  world.alignment(user_prompt, candidate.image), dict(candidate.scores))


def held_out(draw: int, combinations: int = COMBINATIONS) -> list[str]:
    """The eight scenes alone, then `combinations` short prompts naming a scene and one or two attributes, drawn."""
    rng = np.random.default_rng(EVAL_SEEDS + draw)
    out = list(world.SCENES)
    while len(out) < len(world.SCENES) + combinations:
        attributes = world.sample(rng).attributes()
        keys = [k for k in attributes if k != "scene"]
        chosen = rng.choice(keys, size=min(len(keys), int(rng.integers(1, 3))), replace=False)
        prompt = world.prompt_of({"scene": attributes["scene"]} | {str(k): attributes[str(k)] for k in chosen})
        if prompt not in out:
            out.append(prompt)
    return out


def training_prompts(draw: int, n: int) -> list[str]:
    """`n` short prompts for the self-rewarding rounds, drawn apart from the held-out ones."""
    rng, taken, out = np.random.default_rng(EVAL_SEEDS + draw + 1), set(held_out(draw)), []
    while len(out) < n:
        prompt = world.sample_prompt(rng, rich=0.15)[0]
        if prompt not in taken and prompt not in out:
            out.append(prompt)
    return out


def image_seeds(draw: int, n: int) -> list[int]:
    return [EVAL_SEEDS + 3 * 10**5 + 100 * (draw % 10**4) + i for i in range(n)]


def mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


# ---------- refine: best of N by the VLM's own scores ---------------------------------------------------------------


@dataclass
class RefineCase:
    prompt: str
    seed: int
    raw: Scored
    rewrites: list[Scored]  # in the order they were sampled: best-of-N looks at the first N


def best_of(rows: Sequence[Scored], n: int) -> tuple[Scored, Scored]:
    """(the judge's pick, the analytic oracle's pick) among the first `n` rows."""
    return max(rows[:n], key=lambda r: r.judged), max(rows[:n], key=lambda r: r.truth)


def refine_case(generator, vlm, prompt: str, seed: int, n: int, sample_seed: int) -> tuple[RefineCase, list]:
    candidates = propose(vlm, prompt, n=n, seed=sample_seed, tokenizer=generator.prompt_tokenizer,
                         limit=generator.preset.max_sequence_length)
    rows = ranked(generator, vlm, prompt, candidates, seed)
    raw = next(r for r in rows if r.baseline)
    order = {c.prompt: i for i, c in enumerate(candidates)}
    rewrites = sorted((r for r in rows if not r.baseline), key=lambda r: order[r.prompt])
    return RefineCase(prompt, seed, scored(raw, prompt), [scored(r, prompt) for r in rewrites]), [raw, *rewrites]


def refine_summary(cases: Sequence[RefineCase]) -> dict[str, object]:
    """Per N: the mean analytic aesthetic, alignment and truth of the raw prompt, of the judge's pick, of a random pick
    (the mean of the first N) and of the oracle's pick; how often the judge picked the analytic best."""
    out: dict[str, object] = {"cases": len(cases), "raw": {
        "aesthetic": mean([c.raw.aesthetic for c in cases]), "alignment": mean([c.raw.alignment for c in cases]),
        "truth": mean([c.raw.truth for c in cases])}}
    per_n = {}
    for n in BEST_OF:
        usable = [c for c in cases if len(c.rewrites) >= n]
        picks = [best_of(c.rewrites, n) for c in usable]
        per_n[str(n)] = {
            "cases": len(usable), "generations": n + 1,
            "judge": {k: mean([getattr(j, k) for j, _ in picks]) for k in ("aesthetic", "alignment", "truth")},
            "random": {k: mean([mean([getattr(r, k) for r in c.rewrites[:n]]) for c in usable])
                       for k in ("aesthetic", "alignment", "truth")},
            "oracle": {k: mean([getattr(o, k) for _, o in picks]) for k in ("aesthetic", "alignment", "truth")},
            "judge_picks_analytic_best": mean([float(j.truth >= o.truth - 1e-9) for j, o in picks]),
            "chance_of_analytic_best": mean([mean([float(r.truth >= o.truth - 1e-9) for r in c.rewrites[:n]])
                                             for c, (_, o) in zip(usable, picks, strict=True)]),
        }
    out["best_of"] = per_n
    # Which of the judge's signals carries the information: the best of 8 picked by each score alone
    keys = [k for k in ("aesthetic", "alignment", "preference", "vqa") if all(
        r.scores.get(k) is not None for c in cases for r in c.rewrites[:8])]
    out["best_of_8_by_score"] = {k: {m: mean([getattr(max(c.rewrites[:8], key=lambda r: r.scores[k]), m)
                                              for c in cases]) for m in ("aesthetic", "alignment", "truth")}
                                 for k in keys}
    eight = per_n["8"]
    out["aesthetic_gain_best_of_8"] = eight["judge"]["aesthetic"] - out["raw"]["aesthetic"]
    out["alignment_change_best_of_8"] = eight["judge"]["alignment"] - out["raw"]["alignment"]
    out["truth_gain_best_of_8"] = eight["judge"]["truth"] - out["raw"]["truth"]
    out["random_aesthetic_gain_best_of_8"] = eight["random"]["aesthetic"] - out["raw"]["aesthetic"]
    out["oracle_aesthetic_gain_best_of_8"] = eight["oracle"]["aesthetic"] - out["raw"]["aesthetic"]
    out["judge_accuracy"] = [eight["judge_picks_analytic_best"]]
    return out


def refine_table(summary: dict) -> str:
    lines = ["| best of N | generations | judge's pick: aesthetic | alignment | truth | random pick: aesthetic | "
             "oracle: aesthetic | judge picked the analytic best | by chance |", "|" + " --- |" * 9]
    raw = summary["raw"]
    lines.append(f"| raw prompt | 1 | {raw['aesthetic']:.2f} | {raw['alignment']:.2f} | {raw['truth']:.2f} | - | - "
                 "| - | - |")
    for n, row in summary["best_of"].items():
        lines.append(f"| {n} | {row['generations']} | {row['judge']['aesthetic']:.2f} | {row['judge']['alignment']:.2f}"
                     f" | {row['judge']['truth']:.2f} | {row['random']['aesthetic']:.2f} | "
                     f"{row['oracle']['aesthetic']:.2f} | {row['judge_picks_analytic_best']:.0%} | "
                     f"{row['chance_of_analytic_best']:.0%} |")
    picks = summary.get("best_of_8_by_score", {})
    if picks:
        lines += ["", "| best of 8 picked by the judge's ... alone | aesthetic | alignment | truth |",
                  "|" + " --- |" * 4]
        names = {"aesthetic": "aesthetic rubric", "alignment": "alignment rubric", "preference": "preference rubric",
                 "vqa": "VQAScore"}
        lines += [f"| {names[k]} | {v['aesthetic']:.2f} | {v['alignment']:.2f} | {v['truth']:.2f} |"
                  for k, v in picks.items()]
    return "\n".join(lines) + "\n"


def run_refine(generator, vlm, prompts: Sequence[str], seeds: Sequence[int], draw: int
               ) -> tuple[dict, list[RefineCase], list[list[tuple[Image.Image, str]]]]:
    cases, sheet = [], []
    for i, prompt in enumerate(prompts):
        for j, seed in enumerate(seeds):
            case, rows = refine_case(generator, vlm, prompt, seed, max(BEST_OF), sample_seed=draw + 100 * i + j)
            cases.append(case)
            if j == 0:  # the contact sheet: the raw prompt, the judge's pick of 8, the truth's pick of 8 (aesthetics)
                judged, oracle = best_of(case.rewrites, 8)
                image = {r.prompt: r.image for r in rows}
                sheet.append([(image[case.raw.prompt], f"raw: aesthetic {case.raw.aesthetic:.1f}"),
                              (image[judged.prompt], f"judge's pick: {judged.aesthetic:.1f}"),
                              (image[oracle.prompt], f"truth's pick: {oracle.aesthetic:.1f}")])
            print(f"refine {prompt!r} seed {seed}: raw {case.raw.aesthetic:.2f}, judge's pick of 8 "
                  f"{best_of(case.rewrites, 8)[0].aesthetic:.2f}", flush=True)
    return refine_summary(cases), cases, sheet


# ---------- pivot: PRIP against text rewriting, at equal generations ------------------------------------------------


def run_pivot(generator, vlm, prompts: Sequence[str], seeds: Sequence[int], draw: int, generations: int = 9,
              pivots: int = 4) -> tuple[dict, list[dict], list[list[tuple[Image.Image, str]]]]:
    """Text mode writes `generations - 1` rewrites (plus the raw prompt); pivot mode spends `pivots` generations on
    the pivot and writes `generations - 1 - pivots` prompts (plus the raw prompt): the same count of images."""
    cases, sheet = [], []
    for i, prompt in enumerate(prompts):
        for j, seed in enumerate(seeds):
            case, rows = refine_case(generator, vlm, prompt, seed, generations - 1, sample_seed=draw + 100 * i + j)
            text_pick = max(case.rewrites, key=lambda r: r.judged)
            result = pivot(generator, vlm, prompt, n=generations - 1 - pivots, pivots=pivots,
                           seed=draw + 100 * i + j, image_seed=seed)
            refined = [scored(r, prompt) for r in result.refined]
            pivot_pick = max(refined, key=lambda r: r.judged) if refined else case.raw
            cases.append({"prompt": prompt, "seed": seed, "text_generations": len(case.rewrites) + 1,
                          "pivot_generations": pivots + len(refined) + 1,
                          **{mode: asdict(row) | {"truth": row.truth} for mode, row in
                             (("raw", case.raw), ("text", text_pick), ("pivot", pivot_pick),
                              ("pivot_image", scored(result.pivot, prompt)))}})
            if j == 0:
                image = {r.prompt: r.image for r in rows}
                pivot_image = {r.prompt: r.image for r in result.rows}
                sheet.append([(image[case.raw.prompt], f"raw: {case.raw.aesthetic:.1f}"),
                              (image[text_pick.prompt], f"text: {text_pick.aesthetic:.1f}"),
                              (result.pivot.image, "pivot image"),
                              (pivot_image.get(pivot_pick.prompt, image[case.raw.prompt]),
                               f"pivot: {pivot_pick.aesthetic:.1f}")])
            print(f"pivot {prompt!r} seed {seed}: text {text_pick.truth:.2f}, pivot {pivot_pick.truth:.2f}", flush=True)
    summary: dict[str, object] = {"cases": len(cases), "generations": generations, "pivots": pivots}
    for mode in ("raw", "text", "pivot"):
        summary[mode] = {k: mean([c[mode][k] for c in cases]) for k in ("aesthetic", "alignment", "truth")}
    summary["pivot_minus_text_truth"] = summary["pivot"]["truth"] - summary["text"]["truth"]
    summary["pivot_minus_text_aesthetic"] = summary["pivot"]["aesthetic"] - summary["text"]["aesthetic"]
    summary["pivot_wins"] = mean([float(c["pivot"]["truth"] > c["text"]["truth"]) for c in cases])
    summary["text_wins"] = mean([float(c["pivot"]["truth"] < c["text"]["truth"]) for c in cases])
    return summary, cases, sheet


def pivot_table(summary: dict) -> str:
    lines = ["| refined by | generations | aesthetic | alignment | truth |", "|" + " --- |" * 5]
    gens = {"raw": 1, "text": summary["generations"], "pivot": summary["generations"]}
    for mode, label in (("raw", "raw prompt"), ("text", "text rewriting"), ("pivot", "image pivot (PRIP)")):
        row = summary[mode]
        lines.append(f"| {label} | {gens[mode]} | {row['aesthetic']:.2f} | {row['alignment']:.2f} | "
                     f"{row['truth']:.2f} |")
    return "\n".join(lines) + (f"\n\nPivot beats text in {summary['pivot_wins']:.0%} of cases, text beats pivot in "
                               f"{summary['text_wins']:.0%}.\n")


# ---------- recreate: image -> prompt -> image ----------------------------------------------------------------------


def agreement(original: world.Reading, recreated: world.Reading) -> float:
    """The fraction of the original's attributes (as read from its pixels) the recreated image shows."""
    attributes = original.attributes()
    return mean([world.present(recreated, k, v) for k, v in attributes.items()])


def run_recreate(generator, vlm, draw: int, images: int = 32
                 ) -> tuple[dict, list[dict], list[list[tuple[Image.Image, str]]]]:
    """`images` pictures of rich held-out prompts; the VLM writes a prompt from each, the generator renders it from
    another seed (an upload has no seed to reuse). Beside it, the scene named alone: what naming nothing buys."""
    rng = np.random.default_rng(EVAL_SEEDS + draw + 2)
    seeds = image_seeds(draw, 2 * images)
    cases, sheet = [], []
    for i in range(images):
        prompt = world.sample_prompt(rng, rich=0.7)[0]
        original = generator.generate(prompt, seeds[i])
        written = image_to_prompt(vlm, original, generator.prompt_tokenizer, generator.preset.max_sequence_length)
        again = generator.generate(written.prompt, seeds[images + i])
        scene_only = generator.generate(world.read(original).scene, seeds[images + i])
        read_o, read_a, read_s = (world.read(im) for im in (original, again, scene_only))
        described = world.parse(written.prompt)
        cases.append({"prompt": prompt, "written": written.prompt, "attribute_agreement": agreement(read_o, read_a),
                      "scene_only_agreement": agreement(read_o, read_s),
                      "horizon_distance": abs(read_o.horizon - read_a.horizon),
                      "scene_only_horizon_distance": abs(read_o.horizon - read_s.horizon),
                      "description_correct": mean([world.present(read_o, k, v) for k, v in described.items()]),
                      "similarity": similarity(vlm, original, again)})
        if i < 8:
            kept = cases[-1]["attribute_agreement"]
            sheet.append([(original, f"original #{i + 1}"), (again, f"recreated: {kept:.0%}"),
                          (scene_only, "scene alone")])
    summary = {"cases": len(cases),
               **{k: mean([c[k] for c in cases]) for k in ("attribute_agreement", "scene_only_agreement",
                                                            "horizon_distance", "scene_only_horizon_distance",
                                                            "description_correct", "similarity")}}
    summary["recreate_attribute_agreement"] = summary["attribute_agreement"]
    return summary, cases, sheet


def recreate_table(summary: dict) -> str:
    return ("| prompt for the second image | attributes of the original shown | horizon distance |\n"
            "| --- | --- | --- |\n"
            f"| written by the VLM from the image | {summary['attribute_agreement']:.0%} | "
            f"{summary['horizon_distance']:.3f} |\n"
            f"| the scene alone (reference) | {summary['scene_only_agreement']:.0%} | "
            f"{summary['scene_only_horizon_distance']:.3f} |\n\n"
            f"Attributes the written prompt names that the original shows: {summary['description_correct']:.0%}. "
            f"The VLM's own similarity, P(same scene): {summary['similarity']:.2f}.\n")


# ---------- dpo: self-rewarding rounds ------------------------------------------------------------------------------


def judge_pool(generator, draw: int, n: int = 64) -> list[tuple[Image.Image, str]]:
    """Images of drawn rich prompts with a short prompt to judge them against (half of them not what it shows)."""
    rng = np.random.default_rng(EVAL_SEEDS + draw + 3)
    seeds = image_seeds(draw + 1, n)
    pool = []
    for i in range(n):
        prompt, scene = world.sample_prompt(rng, rich=0.6)
        asked = scene.attributes()["scene"] if rng.random() < 0.5 else world.sample_prompt(rng, rich=0.3)[0]
        pool.append((generator.generate(prompt, seeds[i]), asked))
    return pool


def judge_accuracy(vlm, pool: Sequence[tuple[Image.Image, str]], min_gap: float = 0.25) -> tuple[float, float, int]:
    """(accuracy, mean judged score, pairs): the judge's combined scores order pairs of pool images judged against one
    prompt as the analytic truth does (pairs whose truths differ by less than `min_gap` are ties and skipped)."""
    right, judged = [], []
    prompts = sorted({p for _, p in pool})
    for prompt in prompts:
        images = [im for im, p in pool if p == prompt] + [im for im, p in pool if p != prompt][:3]
        rows = [Candidate(prompt, image=im) for im in images]
        score_all(vlm, rows, prompt)
        scores = [(r.combined, world.scores(r.image, prompt)["preference"]) for r in rows]
        judged += [s for s, _ in scores]
        for a in range(len(scores)):
            for b in range(a + 1, len(scores)):
                if abs(scores[a][1] - scores[b][1]) >= min_gap:
                    right.append((scores[a][0] > scores[b][0]) == (scores[a][1] > scores[b][1]))
    return mean(right), mean(judged), len(right)


def mean_of(figures: Sequence[dict[str, float]]) -> dict[str, float]:
    """Figures of equal counts (one `rewrite_quality` per seed) averaged key by key."""
    return {k: mean([f[k] for f in figures]) for k in figures[0]}


def run_dpo(generator, vlm, prompts: Sequence[str], seeds: Sequence[int], draw: int, out_dir: Path, rounds: int = 2,
            train_prompts: int = 16, n: int = 8, epochs: int = 3, lr: float = 5e-5) -> tuple[dict, list[dict], list]:
    """Round r's model (the VLM with round r's LoRA, none for r = 0) writes and judges; its best and worst rewrite of
    each training prompt become a pair and DPO trains round r+1's LoRA from round r's. Measured at every round on the
    held-out prompts (the rewriter's samples) and a fixed pool of images (the judge)."""
    pool = judge_pool(generator, draw)
    train = training_prompts(draw, train_prompts)
    cases, lora, sheet = [], None, []
    for r in range(rounds + 1):
        with vlm_adapter(vlm, lora):
            quality = mean_of([rewrite_quality(generator, vlm, prompts, n, seed, truth=world.scores)
                               for seed in seeds[:2]])
            accuracy, pool_judged, pairs_judged = judge_accuracy(vlm, pool)
            tokenizer, limit = generator.prompt_tokenizer, generator.preset.max_sequence_length
            firsts = [c for p in prompts[:4] for c in propose(vlm, p, n=1, seed=draw, tokenizer=tokenizer, limit=limit)]
            sheet.append([(generator.generate(c.prompt, seeds[0]), c.prompt) for c in firsts])
            case = {"round": r, "lora": str(lora) if lora else None, "samples": quality, "judge_accuracy": accuracy,
                    "judge_pairs": pairs_judged, "judge_mean_on_pool": pool_judged,
                    "pool_truth": mean([world.scores(im, p)["preference"] for im, p in pool])}
            if r < rounds:
                pairs = preference_pairs(generator, vlm, train, n=n, seed=draw + 1000 * r)
        if r < rounds:
            lora_next = out_dir / f"vlm-lora-round{r + 1}"
            log = train_dpo(vlm, pairs, lora_next, epochs=epochs, lr=lr, init_from=lora)
            case |= {"pairs": len(pairs), "dpo_loss": [log[0]["loss"], log[-1]["loss"]],
                     "dpo_margin": [log[0]["margin"], log[-1]["margin"]]}
            lora = lora_next
        cases.append(case)
        print(f"dpo round {r}: samples' aesthetic {quality['aesthetic']:.3f}, truth {quality['preference']:.3f}, "
              f"judge accuracy {accuracy:.3f}", flush=True)
    samples = [c["samples"] for c in cases]
    summary = {"rounds": rounds, "train_prompts": len(train), "held_out_prompts": len(prompts),
               "sample_aesthetic": [s["aesthetic"] for s in samples],
               "sample_truth": [s["preference"] for s in samples],
               "sample_alignment": [s["alignment"] for s in samples],
               "dpo_sample_gain": samples[1]["aesthetic"] - samples[0]["aesthetic"],
               "dpo_sample_truth_gain": samples[1]["preference"] - samples[0]["preference"],
               "judge_accuracy": [c["judge_accuracy"] for c in cases],
               # the judge's liking of its own samples beyond what the truth says, per round: drift toward its style
               "self_preference": [s["judged"] - s["preference"] - (c["judge_mean_on_pool"] - c["pool_truth"])
                                   for s, c in zip(samples, cases, strict=True)]}
    return summary, cases, sheet


def dpo_table(summary: dict) -> str:
    lines = ["| round | samples' aesthetic | alignment | truth | judge's pairwise accuracy | judge's self-preference |",
             "|" + " --- |" * 6]
    for r in range(summary["rounds"] + 1):
        lines.append(f"| {r} | {summary['sample_aesthetic'][r]:.2f} | {summary['sample_alignment'][r]:.2f} | "
                     f"{summary['sample_truth'][r]:.2f} | {summary['judge_accuracy'][r]:.1%} | "
                     f"{summary['self_preference'][r]:+.2f} |")
    return "\n".join(lines) + "\n"


# ---------- pictures and command line -------------------------------------------------------------------------------


def contact_sheet(rows: Sequence[Sequence[tuple[Image.Image, str]]], labels: Sequence[str], cell: int = 168
                  ) -> Image.Image:
    """One row per case: a label on the left, then each (image, caption) scaled to `cell`."""
    label_w, gap, caption = 190, 4, 14
    columns = max(len(r) for r in rows)
    sheet = Image.new("RGB", (label_w + columns * (cell + gap), len(rows) * (cell + caption + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        y = i * (cell + caption + gap)
        draw.text((4, y + cell // 2 - 6), label[:30], fill="black")
        for j, (image, text) in enumerate(row):
            x = label_w + j * (cell + gap)
            sheet.paste(image.convert("RGB").resize((cell, cell), Image.NEAREST), (x, y))
            draw.text((x + 2, y + cell + 1), text[:28], fill="black")
    return sheet


if __name__ == "__main__":  # the command lives in pipelines/commands/evaluate_prompts.py
    from .commands.evaluate_prompts import main

    sys.exit(main())
