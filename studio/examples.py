"""The app's precomputed examples: one per control (its `example()`), run once and stored with their images.

    python -m studio.examples --preset toy      # writes assets/examples/cached/
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np

import overlays
from overlays.build import build
from pipelines.checks import check_output_dir, check_steps
from pipelines.commands import cli
from pipelines.files import write_text
from pipelines.generator import Generator
from pipelines.loading import default_device, load_generator, load_vlm
from pipelines.optimize import with_prompt_guard
from pipelines.presets import get_preset
from pipelines.steering import held
from pipelines.vlm import VLM

from .controls import DISPLAY, editor_value, overlaid
from .runs import run

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples" / "cached"


def load_examples(folder: Path = EXAMPLES_DIR) -> dict[str, object] | None:
    """The manifest written by make_examples, with absolute file paths; None if there is none."""
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    for ex in manifest["examples"]:
        for key in ("before", "after", "overlay", "after_overlay", "lora", "reference", "drawing", "canvas"):
            if ex.get(key):
                ex[key] = str(folder / ex[key])
    return manifest


def make_examples(generator: Generator, vlm: VLM, folder: Path = EXAMPLES_DIR, steps: int | None = None) -> Path:
    """Run every control's example once and write its images, LoRA and scores under `folder` (manifest.json)."""
    preset = generator.preset
    steps = steps or preset.steps
    folder.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    out = []
    for name, control in overlays.CONTROLS.items():
        example = control.example()
        entry: dict[str, object] = {"control": name, "prompt": example.prompt, "seed": example.seed, "params": {}}
        params = dict(example.values)
        for key, value in example.values.items():  # images are stored as files beside the manifest
            if hasattr(value, "save"):
                value.save(folder / f"{name}-{key}.png")
                entry["reference"] = f"{name}-{key}.png"
            else:
                entry["params"][key] = list(value) if isinstance(value, tuple) else value
        drawing = None
        if example.drawing is not None:
            example.drawing.save(folder / f"{name}-drawing.png")
            entry["drawing"] = f"{name}-drawing.png"
            drawing = np.asarray(example.drawing.convert("RGBA"))
        built = build([name], preset.resolution, params, drawing=drawing, questions=example.questions)
        # as the page runs it with its keep-prompt box at the preset's value
        questions = with_prompt_guard(built.questions, example.prompt) if preset.keep_prompt else built.questions
        events = list(run(generator, vlm, example.prompt, example.seed, questions, steps=steps,
                          out_path=folder / f"{name}-lora.safetensors", lock=lock, overlay=built.overlay,
                          overlay_description=built.description, target_p=preset.target_p,
                          steering={"hold": held([control.changes])}))
        done = events[-1]
        done.before.save(folder / f"{name}-before.png")
        done.after.save(folder / f"{name}-after.png")
        editor_value(done.before, DISPLAY)["background"].save(folder / f"{name}-canvas.png")
        overlaid(done.before, built.overlay, preset.resolution).save(folder / f"{name}-overlay.png")
        overlaid(done.after, built.overlay, preset.resolution).save(folder / f"{name}-after-overlay.png")
        entry |= {"questions": [list(q) for q in built.questions], "asked": [list(q) for q in questions],
                  "p_before": done.p_before, "p_after": done.p_after,
                  "before": f"{name}-before.png", "after": f"{name}-after.png",
                  "overlay": f"{name}-overlay.png", "after_overlay": f"{name}-after-overlay.png",
                  "lora": f"{name}-lora.safetensors", "canvas": f"{name}-canvas.png",
                  "steps": len(done.history), "final_loss": done.history[-1].loss, "description": built.description,
                  "unseen_seeds": done.unseen.as_dict() if done.unseen else None}
        out.append(entry)
        print(f"{name}: P(expected answers) {done.p_before:.4f} -> {done.p_after:.4f} ({len(done.history)} steps)")
    manifest = {"preset": preset.name, "steps": steps, "examples": out}
    return write_text(folder / "manifest.json", json.dumps(manifest, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:

    parser = cli.parser(description="Precompute the app's examples (images, LoRAs, scores).")
    parser.add_argument("--preset", default="toy")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--out", default=str(EXAMPLES_DIR))
    args = parser.parse_args(argv)
    with cli.errors_as_messages():
        preset = get_preset(args.preset)
        out = check_output_dir(args.out, "--out")
        if args.steps is not None:
            check_steps(args.steps)
        device = default_device()
        path = make_examples(load_generator(preset, device), load_vlm(preset, device), out, args.steps)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
