"""`python -m pipelines.bench --suite gpu`: the project's GPU benchmark (what it runs: `pipelines/bench.py`).

It imports nothing but the standard library and torch, so it runs on a device image that lacks diffusers: it
installs the carried wheels (`--wheels`) into a folder of its own and puts it first on every run's path.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import torch

from ..bench import CARRIED, GPU_SUITE, SUITE_BUDGET_S, SUITE_PREDICTIONS, SUITE_SIZE, SuiteRun, suite_row, suite_table
from .oneline import fail, parser

ROOT = Path(__file__).resolve().parents[2]
MIN_RUN_S = 30  # a run given less than this cannot load a full-size model: it is reported as not run


def build_parser() -> argparse.ArgumentParser:
    p = parser("The GPU benchmark: every configuration of pipelines/bench.py's GPU_SUITE, each in its own process, "
               "within one wall-clock budget; a Markdown table with the cost model's predictions beside the figures.")
    p.add_argument("--suite", choices=["gpu"], default="gpu")
    p.add_argument("--dry-run", action="store_true", help="rehearse the same runs on the CPU with the tiny preset")
    p.add_argument("--out-dir", help="folder for summary.md and each run's JSON and log (default: $OUT/bench-gpu "
                                     "on the device, else bench-gpu)")
    p.add_argument("--wheels", help="install the .whl files in this folder first (--no-deps, into a folder of "
                                    "their own, first on each run's path): what the device image lacks")
    p.add_argument("--download-wheels", metavar="DIR",
                   help="fetch the wheels the device lacks into DIR (" + ", ".join(CARRIED) + ", at this "
                        "machine's versions) and stop")
    p.add_argument("--budget", type=float, default=SUITE_BUDGET_S,
                   help=f"seconds for the whole suite (default {SUITE_BUDGET_S}: one device call)")
    p.add_argument("--only", help="the runs to do, by name, separated by ','")
    p.add_argument("--write-predictions", action="store_true",
                   help=f"count every run's plan with the cost model (a CPU, minutes) into {SUITE_PREDICTIONS.name}, "
                        "which the suite reads on the device, and stop")
    return p


def write_predictions(runs: list[SuiteRun], env: dict[str, str]) -> dict[str, dict[str, float]]:
    """`bench --cost` of each distinct plan at the suite's size, in one file the device run reads."""
    out: dict[str, dict[str, float]] = {}
    for run in runs:
        if run.plan in out:
            continue
        done = subprocess.run([sys.executable, "-m", "pipelines.bench", "--cost", *run.plan_args(), "--size",
                               str(SUITE_SIZE), "--json", "-"], cwd=ROOT, env=env, capture_output=True, text=True,
                              check=True)
        report = json.loads(done.stdout)
        out[run.plan] = {"peak_gib": round(report["process_peak_bytes"] / 2**30, 2),
                         "step_peak_gib": round(report["peak_bytes"] / 2**30, 2),
                         "floor_s_per_step": round(report["floor_s"] / report["steps"], 4),
                         "peak_tflops": report["peak_tflops"]}
        print(f"{run.plan}: {out[run.plan]}", flush=True)
    SUITE_PREDICTIONS.parent.mkdir(parents=True, exist_ok=True)
    SUITE_PREDICTIONS.write_text(json.dumps(out, indent=1) + "\n")
    return out


def chosen(only: str | None) -> list[SuiteRun]:
    """The suite's runs, or those named by --only (an unknown name is refused, listing the names)."""
    if not only:
        return list(GPU_SUITE)
    names = [n.strip() for n in only.split(",") if n.strip()]
    known = {run.name: run for run in GPU_SUITE}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"--only {unknown[0]!r} is not a run of the suite: {', '.join(known)}")
    return [known[n] for n in names]


def download_wheels(folder: Path) -> list[str]:
    """`pip download --no-deps` of each carried package at the version installed here (the pinned ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={metadata.version(name)}" for name in CARRIED]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d",
                    str(folder), *pins], check=True)
    return pins


def install_wheels(folder: Path) -> Path:
    """The carried wheels installed into a fresh folder (nothing of the machine's own installation changes)."""
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        raise ValueError(f"--wheels {str(folder)!r} holds no .whl file")
    target = Path(tempfile.mkdtemp(prefix="bench-site-"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--target", str(target), *map(str, wheels)], check=True, stdout=subprocess.DEVNULL)
    return target


def run_one(run: SuiteRun, out_dir: Path, env: dict[str, str], limit: float, dry_run: bool) -> tuple[dict | None,
                                                                                                      str]:
    """One configuration in a process of its own: its figures, or why there are none (its log's last line)."""
    stem = run.name.replace(" ", "-")
    figures_path, log_path = out_dir / f"{stem}.json", out_dir / f"{stem}.log"
    command = [sys.executable, "-m", "pipelines.bench", *run.bench_args(dry_run), "--json", str(figures_path)]
    with open(log_path, "w") as log:
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=limit)
        except subprocess.TimeoutExpired:
            return None, f"over its {limit:.0f} s limit"
    if done.returncode != 0 or not figures_path.exists():
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        return None, (lines[-1] if lines else f"exit status {done.returncode}")[:160]
    return json.loads(figures_path.read_text()), ""


def header(args: argparse.Namespace, words: list[str]) -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (a rehearsal)"
    rehearsal = " (dry run: each family's tiny preset on the CPU)" if args.dry_run else ""
    return (f"GPU suite{rehearsal}: "
            f"`python -m pipelines.bench {' '.join(words)}`, {datetime.date.today()}, {device}, torch "
            f"{torch.__version__}. Each row: medians after warm-up; the prediction is `pipelines.cost`'s for the "
            "same plan.\n\n")


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(words)
    env = os.environ | {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        if args.download_wheels:
            pins = download_wheels(Path(args.download_wheels))
            print(f"downloaded {', '.join(pins)} into {args.download_wheels}")
            return 0
        runs = chosen(args.only)
        paths = [str(install_wheels(Path(args.wheels)))] if args.wheels else []
        env["PYTHONPATH"] = os.pathsep.join([*paths, str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        if args.write_predictions:
            write_predictions(runs, env)
            return 0
        if not 0 < args.budget <= 3600:
            raise ValueError(f"--budget {args.budget:g} must be from 0 to 3600 seconds")
        out_dir = Path(args.out_dir or Path(os.environ.get("OUT", ".")) / "bench-gpu")
        out_dir.mkdir(parents=True, exist_ok=True)
        predictions = json.loads(SUITE_PREDICTIONS.read_text()) if SUITE_PREDICTIONS.exists() else {}
    except (ValueError, OSError, subprocess.CalledProcessError) as exc:
        fail(str(exc))
    deadline, rows, measured = time.monotonic() + args.budget, [], 0
    top = header(args, words)
    for run in runs:
        left = deadline - time.monotonic()
        if left < MIN_RUN_S:
            rows.append(suite_row(run, None, "the suite's time ran out"))
        else:
            figures, failure = run_one(run, out_dir, env, min(left, run.limit_s * (4 if args.dry_run else 1)),
                                       args.dry_run)
            measured += figures is not None
            rows.append(suite_row(run, figures, failure, None if args.dry_run else predictions.get(run.plan)))
            print(f"{run.name}: {'measured' if figures else failure}", flush=True)
        (out_dir / "summary.md").write_text(top + suite_table(rows))  # after each run: a cut-off call keeps it
    print(top + suite_table(rows))
    if not measured:
        fail(f"no run of the suite finished (see the logs in {out_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
