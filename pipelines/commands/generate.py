"""`python -m pipelines.generate`: the command line of `pipelines/generate.py` (usage: its docstring)."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from .. import lora
from ..checks import MAX_LORA_SCALE, check_generate_size, check_output, check_prompt, check_scale, check_seed
from ..files import replacing
from ..loading import default_device, load_generator
from . import cli


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("Generate an image, optionally with a LoRA made by pipelines.optimize.")
    cli.add_model_args(parser, vlm=False)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--lora", help="LoRA file (.safetensors)")
    parser.add_argument("--scale", type=float, default=1.0, help=f"LoRA scale, 0 to {MAX_LORA_SCALE:g}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, help="image side in pixels (default: the preset's)")
    parser.add_argument("--out", required=True, help="image file to write (.png, .jpg, .webp)")
    args = parser.parse_args(argv)
    with cli.errors_as_messages():
        preset = cli.preset_from_args(args)
        check_prompt(args.prompt)
        if args.lora:
            lora.check_lora_file(args.lora)
        check_scale(args.scale)
        check_seed(args.seed)
        if args.size is not None:
            check_generate_size(args.size)
        check_output(args.out, (".png", ".jpg", ".jpeg", ".webp"))
        generator = load_generator(preset, args.gen_device or default_device())
        image = generator.generate(args.prompt, args.seed, args.size, lora_path=args.lora, scale=args.scale)
        with replacing(args.out) as tmp:  # never half an image where a good one was
            image.save(tmp, format=Image.registered_extensions()[Path(args.out).suffix.lower()])
        print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
