"""`python -m pipelines.judge`: the command line of `pipelines/judge.py` (usage: its docstring)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from ..checks import check_prompt
from ..judge import compare, judge
from . import cli


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("Score images with the preset's VLM as a judge.")
    cli.add_model_args(parser)
    parser.add_argument("--prompt", required=True, help="what the image(s) should show")
    parser.add_argument("--image", action="append", required=True, help="one or two images")
    parser.add_argument("--sampled", action="store_true", help="average 3 sampled verdicts (T=0.9)")
    args = parser.parse_args(argv)
    with cli.errors_as_messages():
        check_prompt(args.prompt)
        if len(args.image) > 2:
            raise ValueError(f"{len(args.image)} images given; the judge takes one or two")
        images = [cli.load_upload(p) for p in args.image]
        vlm = cli.load_models(args, cli.preset_from_args(args), generator=False)[1]
        out: dict = {}
        for path, image in zip(args.image, images, strict=True):
            report = judge(vlm, image, args.prompt, sampled=args.sampled)
            out[path] = {"vqa_score": report.vqa_score,
                         **{r: {"score": v.label(), "explanation": v.explanation} for r, v in report.verdicts.items()}}
        if len(images) == 2:
            out["comparison"] = asdict(compare(vlm, images[0], images[1], args.prompt))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
