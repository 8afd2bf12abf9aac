"""Ready for a ZeroGPU Space: the Space's requirements, each call's duration and slice, the refusals, and the GPU
benchmark's rehearsal. The real `spaces` package is installed (requirements-test.txt) and its decorator is applied
to every GPU function; away from ZeroGPU it runs them as they are (its local mode)."""

from __future__ import annotations

import dataclasses
import json
import re
import sys

import pytest
import spaces

from pipelines import bench, checks
from pipelines import space as space_mod
from pipelines.commands import bench as bench_cmd
from pipelines.commands import bench_suite
from pipelines.commands import optimize as optimize_cmd
from pipelines.commands import space as space_cmd
from pipelines.presets import get_preset
from studio import gpu
from tests.test_app import ROOT


def pins(text: str) -> dict[str, str]:
    """name -> the requirement without its comment, for every requirement line."""
    out = {}
    for line in text.splitlines():
        name = space_mod.requirement_name(line)
        if name and not line.strip().startswith("-r"):
            out[name] = line.split("#")[0].strip()
    return out


def test_the_space_gets_a_zerogpu_torch_and_otherwise_the_same_requirements(tmp_path, capsys):
    out = tmp_path / "space"
    assert space_cmd.main(["--out", str(out)]) == 0
    repo, space = pins((ROOT / "requirements.txt").read_text()), pins((out / "requirements.txt").read_text())
    assert repo["torch"] == "torch==2.13.0" and space["torch"] == f"torch=={space_mod.SPACE_TORCH}"
    major, minor, _ = (int(v) for v in space_mod.SPACE_TORCH.split("."))
    assert (2, 8) <= (major, minor) <= (2, 11)  # the range ZeroGPU supports
    assert space.pop("spaces") == pins((ROOT / "requirements-test.txt").read_text())["spaces"]  # what tests run
    assert {k: v for k, v in space.items() if k != "torch"} == {k: v for k, v in repo.items() if k != "torch"}
    assert (out / "app.py").exists() and (out / "assets").is_dir() and not (out / "tests").exists()
    front = (out / "README.md").read_text().split("---")[1]
    assert "app_file: app.py" in front and f"sdk_version: {repo['gradio'].split('==')[1]}" in front
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:  # a folder with something in it is never written over
        space_cmd.main(["--out", str(out)])
    assert stop.value.code == 2 and "is not empty" in capsys.readouterr().err


def test_every_gpu_function_goes_through_spaces_gpu(monkeypatch):
    """The real decorator (local mode) wraps a fresh copy of each function with its duration function."""
    seen = []
    real = spaces.GPU

    def recording(task=None, *, duration=None, size=None):
        seen.append((task.__name__, duration, size))
        return real(task, duration=duration, size=size)

    monkeypatch.setattr(gpu.spaces, "GPU", recording)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")  # read per call by our code; `spaces` itself stays local
    size, why = gpu.use_slice(get_preset("tiny"))
    assert size == "large" and "GiB" in why
    names = {name for name, _, _ in seen}
    assert {"gpu_generate", "gpu_run", "gpu_score", "gpu_refine", "gpu_refine_pivot", "gpu_self_improve"} <= names
    assert all(callable(duration) and s == "large" for _, duration, s in seen)


def test_durations_grow_with_the_request():
    schnell = get_preset("flux-schnell")
    gpu.SLICE.update(size="large")
    qa = [("Is it? Answer with Yes or No.", "Yes")]
    ten, hundred = gpu.run_seconds(schnell, "p", 0, qa, 10, "/x"), gpu.run_seconds(schnell, "p", 0, qa, 100, "/x")
    assert ten < hundred < gpu.run_seconds(schnell, "p", 0, qa * 3, 100, "/x")
    assert hundred < gpu.run_seconds(schnell, "p", 0, qa, 100, "/x", steering={"views": 4})
    assert hundred < gpu.run_seconds(dataclasses.replace(schnell, resolution=1024), "p", 0, qa, 100, "/x")
    assert gpu.refine_seconds(schnell, "p", 2) < gpu.refine_seconds(schnell, "p", 8)
    # The defaults fit: 100 steps of the flagship on its large slice, counted 1.5 times, stay under the maximum.
    assert hundred * checks.ZEROGPU_COUNTED["large"] <= checks.ZEROGPU_MAX_SECONDS


def test_a_request_over_the_maximum_is_refused_before_it_queues(monkeypatch):
    """On ZeroGPU (SPACES_ZERO_GPU, read per call) a run ZeroGPU would refuse never reaches the decorator: one line
    that says how many steps fit."""
    gpu.use_slice(get_preset("tiny"))
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setattr(gpu, "models", lambda preset: pytest.fail("a refused request must not touch the models"))
    schnell = get_preset("flux-schnell")
    qa = [("Is it? Answer with Yes or No.", "Yes")]
    with pytest.raises(ValueError, match=r"over the 300 s one request may have: use at most (\d+) steps") as refused:
        gpu.gpu_run(schnell, "p", 0, qa, 500, "/tmp/x.safetensors")
    fit = int(re.search(r"at most (\d+) steps", str(refused.value)).group(1))
    counted = checks.ZEROGPU_COUNTED["large"]
    assert gpu.run_seconds(schnell, "p", 0, qa, fit, "/x") * counted <= checks.ZEROGPU_MAX_SECONDS
    assert gpu.run_seconds(schnell, "p", 0, qa, fit + 1, "/x") * counted > checks.ZEROGPU_MAX_SECONDS
    with pytest.raises(ValueError, match="fewer candidates"):
        gpu.gpu_refine(get_preset("flux-dev"), "p", 16, 1.0, 1.0, 0)
    assert "\n" not in str(refused.value)


def test_a_request_that_fits_runs_through_the_decorator(monkeypatch, tiny_models):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    tiny = get_preset("tiny")
    gpu.use_slice(tiny)
    image = gpu.gpu_generate(tiny, "a red apple", 3)
    assert image.size == (tiny.resolution, tiny.resolution)


def test_the_slice_follows_the_plans_predicted_peak(monkeypatch):
    monkeypatch.delenv("ZEROGPU_SIZE", raising=False)
    size, why = gpu.slice_for(get_preset("flux-schnell"))  # int8, text encoders offloaded: 35.8 GiB
    assert size == "large" and "35.8 GiB" in why
    size, why = gpu.slice_for(get_preset("flux-dev"))  # bf16: 46.9 GiB and the headroom pass half a card
    assert size == "xlarge" and "46.9 GiB" in why
    # The Flux plans are read from the GPU suite's predictions (counted once, not at every start); others counted.
    assert gpu.predicted_peak_gib(get_preset("tiny")) < 1
    size, why = gpu.slice_for(get_preset("flux-schnell-idefics2"))  # the cost model cannot count idefics2
    assert size == "xlarge" and "cannot size" in why
    monkeypatch.setenv("ZEROGPU_SIZE", "large")
    assert gpu.slice_for(get_preset("flux-dev")) == ("large", "set by ZEROGPU_SIZE")
    monkeypatch.setenv("ZEROGPU_SIZE", "huge")
    with pytest.raises(ValueError, match="ZEROGPU_SIZE 'huge' must be one of large, xlarge"):
        gpu.slice_for(get_preset("tiny"))


def test_compile_is_refused_on_zerogpu_in_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    with pytest.raises(SystemExit) as stop:
        optimize_cmd.main(["--preset", "tiny", "--prompt", "a", "--question", "Is it?", "--compile", "--out",
                           str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "not available on ZeroGPU" in err
    assert not (tmp_path / "x.safetensors").exists()
    monkeypatch.delenv("SPACES_ZERO_GPU")
    assert checks.check_compile(True) is True  # elsewhere it stays an option


def test_the_gpu_suite_plans_every_factor_and_rehearses_on_the_cpu(tmp_path, capsys):
    runs = {(r.preset, r.base_weights, r.checkpointing, r.compile) for r in bench.GPU_SUITE}
    for preset in ("flux-schnell", "sana", "flux-dev"):
        assert any(r[0] == preset for r in runs)
    assert {r[1] for r in runs} == {"bf16", "int8"} and {r[2] for r in runs} == {True, False}
    assert {r[3] for r in runs} == {True, False}
    first = bench.GPU_SUITE[0].bench_args()
    assert first[:2] == ["--preset", "flux-schnell"] and "--random-weights" in first and "512" in first
    assert bench.GPU_SUITE[0].bench_args(dry_run=True)[:2] == ["--preset", "tiny"]
    assert {bench.REHEARSAL[r.preset] for r in bench.GPU_SUITE} == {"tiny", "tiny-dev", "tiny-sana"}
    assert all(r.limit_s <= bench.SUITE_BUDGET_S for r in bench.GPU_SUITE)
    # The rehearsal: the same command, one run, on the CPU, through `python -m pipelines.bench --suite gpu`.
    assert bench_cmd.main(["--suite", "gpu", "--dry-run", "--out-dir", str(tmp_path), "--only",
                           "sana bf16 ckpt"]) == 0
    printed = capsys.readouterr().out
    assert "| sana bf16 ckpt | 0." in printed and "predicted peak GiB" in printed
    figures = json.loads((tmp_path / "sana-bf16-ckpt.json").read_text())
    assert figures["predicted"]["peak_gib"] > 0 and figures["gradient_checkpointing"] is True
    assert (tmp_path / "summary.md").read_text().count("|") > 10


def test_the_gpu_suite_says_what_did_not_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        bench_suite.main(["--dry-run", "--out-dir", str(tmp_path), "--budget", "1", "--only",
                          "sana bf16,flux-dev bf16 ckpt"])
    captured = capsys.readouterr()
    assert stop.value.code == 2 and "no run of the suite finished" in captured.err
    assert captured.out.count("not measured: the suite's time ran out") == 2
    with pytest.raises(SystemExit):
        bench_suite.main(["--only", "flux-xl"])
    assert "'flux-xl' is not a run of the suite" in capsys.readouterr().err


def test_the_suite_starts_without_diffusers(tmp_path):
    """On the device image diffusers is missing until the carried wheels are installed: the suite's own module
    must import without it."""
    import subprocess

    blocker = tmp_path / "diffusers"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('no diffusers here')\n")
    code = "import sys; sys.argv = ['x', '--suite', 'gpu', '--only', 'nope']; import runpy; " \
           "runpy.run_module('pipelines.bench', run_name='__main__')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and "'nope' is not a run of the suite" in done.stderr, done.stderr[-500:]


def test_the_page_says_which_slice_on_zerogpu(monkeypatch, tmp_path, capsys):
    import gradio as gr

    import studio

    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    demo = studio.build_demo("tiny", output_dir=tmp_path)
    header = next(b for b in demo.blocks.values() if isinstance(b, gr.Markdown) and b.elem_id == "header")
    assert "ZeroGPU slice: **large** (its plan is predicted to peak at" in header.value
    assert "ZeroGPU slice: large" in capsys.readouterr().out


def test_the_device_run_reads_a_prediction_for_every_plan():
    """Counting a Flux plan takes a CPU a minute, so the device run reads the predictions counted here."""
    predictions = json.loads(bench.SUITE_PREDICTIONS.read_text())
    assert {run.plan for run in bench.GPU_SUITE} <= set(predictions)
    flagship = predictions[bench.GPU_SUITE[0].plan]  # flux-schnell int8 checkpointing on: the default plan
    assert round(flagship["peak_gib"], 1) == 35.8 and flagship["floor_s_per_step"] > 0
    row = bench.suite_row(bench.GPU_SUITE[0], {"s_per_step_median": 0.1, "s_per_100_steps": 10.0,
                                               "s_per_generation_median": 0.3, "gpu_allocated_gb": 33.0,
                                               "load_s": 40, "device": "H200"}, predicted=flagship)
    assert row[4:7] == ["33.00", "35.81", f"{flagship['floor_s_per_step']:.4f}"]
