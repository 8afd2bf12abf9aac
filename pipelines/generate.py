"""Generate one image, optionally with a learned LoRA at a given scale.

    python -m pipelines.generate --preset tiny --prompt "a desert" --lora beach.safetensors \
        --scale 1.0 --seed 3 --out desert.png
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from . import cli, lora
from .generator import Generator
from .loading import default_device, load_generator


def generate(generator: Generator, prompt: str, seed: int, lora_path: str | Path | None = None,
             scale: float = 1.0, size: int | None = None) -> Image.Image:
    """One pass of the stock pipeline; the LoRA (if any) is gone from the pipeline afterwards."""
    cond = generator.encode(cli.check_prompt(prompt))
    with lora.applied(generator.pipe, lora_path, scale):
        return generator.generate(cond, seed, size)


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("Generate an image, optionally with a LoRA made by pipelines.optimize.")
    cli.add_model_args(parser, vlm=False)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--lora", help="LoRA file (.safetensors)")
    parser.add_argument("--scale", type=float, default=1.0, help=f"LoRA scale, 0 to {lora.MAX_SCALE:g}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, help="image side in pixels (default: the preset's)")
    parser.add_argument("--out", required=True, help="image file to write (.png, .jpg, .webp)")
    args = parser.parse_args(argv)
    with cli.errors_as_messages():
        preset = cli.preset_from_args(args)
        cli.check_prompt(args.prompt)
        if args.lora:
            lora.check_lora_file(args.lora)
        lora.check_scale(args.scale)
        if Path(args.out).suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
            raise ValueError(f"--out {args.out!r} must end in .png, .jpg or .webp")
        generator = load_generator(preset, args.gen_device or default_device())
        image = generate(generator, args.prompt, args.seed, args.lora, args.scale, args.size)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        image.save(args.out)
        print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
