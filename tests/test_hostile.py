"""Hostile and mistaken input through the command-line tools: a non-zero exit and ONE line that names the value or
the field, never a traceback; nothing half-written; the shared pipeline untouched.

Families (cases): image files (13), output paths (6), numbers (12), text (6), LoRA files (6), options (3), a
run that fails mid-way (2). The app's side (gradio_client) is in test_app.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_files import png_claiming
from PIL import Image

from pipelines import lora, optimize
from pipelines.commands import bench as bench_cmd
from pipelines.commands import evaluate as evaluate_cmd
from pipelines.commands import generate as generate_cmd
from pipelines.commands import judge as judge_cmd
from pipelines.commands import optimize as optimize_cmd
from pipelines.commands import refine as refine_cmd
from pipelines.commands import self_reward as self_reward_cmd
from pipelines.optimize import save_result
from studio import examples

QA = [("Is the horizon of the scene aligned with the red line? Answer with Yes or No.", "Yes")]


def make_files(tmp: Path) -> dict[str, Path]:
    files = {"notes.png": b"not an image at all", "drawing.svg": b'<svg xmlns="http://www.w3.org/2000/svg"/>',
             "bomb.png": png_claiming(40_000, 40_000), "empty.png": b""}
    for name, content in files.items():
        (tmp / name).write_bytes(content)
    cut = tmp / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(cut)
    cut.write_bytes(cut.read_bytes()[:200])
    (tmp / "latin1.txt").write_bytes("une plage \xe0 midi\n".encode("latin-1"))
    (tmp / "prompts.txt").write_text("a beach\n")
    (tmp / "a_folder.safetensors").mkdir()
    (tmp / "a_folder.json").mkdir()
    (tmp / "a_file").write_text("x")
    (tmp / "not_an_adapter").mkdir()
    return {p.name: p for p in tmp.iterdir()}


def one_line(main, argv, capsys) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("note:")]
    assert code not in (0, None), err
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


OPT = ["--preset", "tiny", "--prompt", "a beach"]
OUT = ["--out", "OUT/x.safetensors"]
CASES = {
    # image files: every image argument, every kind of bad file
    "overlay not an image": (optimize_cmd.main, [*OPT, "--question", "Q?", "--overlay", "notes.png", *OUT],
                             r"notes.png' is not a readable image"),
    "overlay svg": (optimize_cmd.main, [*OPT, "--question", "Q?", "--overlay", "drawing.svg", *OUT], "drawing.svg"),
    "overlay bomb": (optimize_cmd.main, [*OPT, "--question", "Q?", "--overlay", "bomb.png", *OUT],
                     "at most 8192 pixels a side"),
    "overlay truncated": (optimize_cmd.main, [*OPT, "--question", "Q?", "--overlay", "cut.png", *OUT], "cut.png"),
    "overlay empty file": (optimize_cmd.main, [*OPT, "--question", "Q?", "--overlay", "empty.png", *OUT], "empty.png"),
    "overlay missing": (optimize_cmd.main, [*OPT, "--question", "Q?", "--overlay", "nope.png", *OUT],
                        "nope.png' does not exist"),
    "palette image bomb": (optimize_cmd.main, [*OPT, "--control", "palette", "--palette-image", "bomb.png", *OUT],
                           "bomb.png"),
    "palette image svg": (optimize_cmd.main, [*OPT, "--control", "palette", "--palette-image", "drawing.svg", *OUT],
                          "drawing.svg"),
    "reference truncated": (optimize_cmd.main, [*OPT, "--control", "composition", "--reference", "cut.png",
                                            "--question", "Q?", *OUT], "cut.png"),
    "judge image bomb": (judge_cmd.main, ["--preset", "tiny", "--prompt", "a cat", "--image", "bomb.png"], "bomb.png"),
    "judge image text": (judge_cmd.main, ["--preset", "tiny", "--prompt", "a cat", "--image", "notes.png"],
                         "notes.png"),
    "refine image svg": (refine_cmd.main, ["--preset", "tiny", "--image", "drawing.svg"], "drawing.svg"),
    "refine image folder": (refine_cmd.main, ["--preset", "tiny", "--image", "not_an_adapter"], "not a file"),
    # output paths: refused before any model loads
    "out is a folder": (optimize_cmd.main, [*OPT, "--question", "Q?", "--out", "a_folder.safetensors"], "is a folder"),
    "out under a file": (optimize_cmd.main, [*OPT, "--question", "Q?", "--out", "a_file/x.safetensors"],
                         "is a file, not a folder"),
    "out read-only": (optimize_cmd.main, [*OPT, "--question", "Q?", "--out", "/proc/1/x.safetensors"], "read-only"),
    "out wrong suffix": (optimize_cmd.main, [*OPT, "--question", "Q?", "--out", "x.pt"], r"must end in \.safetensors"),
    "image out is a folder": (generate_cmd.main, ["--preset", "tiny", "--prompt", "a", "--out", "a_folder.safetensors"],
                              "must end in"),
    "image out under a file": (generate_cmd.main, ["--preset", "tiny", "--prompt", "a", "--out", "a_file/x.png"],
                               "is a file, not a folder"),
    "image out on a read-only file system": (generate_cmd.main, ["--preset", "tiny", "--prompt", "a", "--out",
                                                             "/sys/x.png"], "could not write or read '/sys/x.png'"),
    "bench json is a folder": (bench_cmd.main, ["--cost", "--preset", "tiny", "--json", "a_folder.json"],
                               "is a folder"),
    "bench json read-only": (bench_cmd.main, ["--preset", "tiny", "--json", "/proc/1/x.json"], "read-only"),
    "refine out-dir is a file": (refine_cmd.main, ["--preset", "tiny", "--prompt", "a cat", "--out-dir", "a_file"],
                                 "is a file, not a folder"),
    "self-reward out is a file": (self_reward_cmd.main, ["--preset", "tiny", "--prompts", "prompts.txt", "--out",
                                                     "a_file"], "is a file, not a folder"),
    "evaluate out-dir under a file": (evaluate_cmd.main, ["horizon", "--preset", "tiny", "--out-dir", "a_file/x"],
                                      "is a file, not a folder"),
    "examples out is a file": (examples.main, ["--preset", "tiny", "--out", "a_file"], "is a file, not a folder"),
    # numbers
    "bench size huge": (bench_cmd.main, ["--preset", "tiny", "--size", "100000"],
                        "--size 100000 must be a whole number"),
    "bench cost size huge": (bench_cmd.main, ["--cost", "--preset", "tiny", "--size", "100000"], "--size 100000"),
    "seed negative": (optimize_cmd.main, [*OPT, "--question", "Q?", "--seed", "-1", *OUT], "seed -1"),
    "seed too big": (generate_cmd.main, ["--preset", "tiny", "--prompt", "a", "--seed", str(2**32), "--out", "x.png"],
                     "seed 4294967296"),
    "seed text": (generate_cmd.main, ["--preset", "tiny", "--prompt", "a", "--seed", "seven", "--out", "x.png"],
                  "seven"),
    "steps float": (optimize_cmd.main, [*OPT, "--question", "Q?", "--steps", "2.5", *OUT], "2.5"),
    "lr nan": (optimize_cmd.main, [*OPT, "--question", "Q?", "--lr", "nan", *OUT], "learning rate nan"),
    "alpha inf": (optimize_cmd.main, [*OPT, "--question", "Q?", "--alpha", "inf", *OUT], "LoRA alpha inf"),
    "scale nan": (generate_cmd.main, ["--preset", "tiny", "--prompt", "a", "--scale", "nan", "--out", "x.png"],
                  "LoRA scale nan"),
    "size huge": (generate_cmd.main, ["--preset", "tiny", "--prompt", "a", "--size", "100000", "--out", "x.png"],
                  "image size 100000 must be a whole number from 16 to 2048"),
    "rank huge": (optimize_cmd.main, [*OPT, "--question", "Q?", "--rank", "100000", *OUT], "LoRA rank 100000"),
    "refine n 0": (refine_cmd.main, ["--preset", "tiny", "--prompt", "a cat", "--n", "0"], "0"),
    "eval seeds negative": (optimize_cmd.main, [*OPT, "--question", "Q?", "--eval-seeds", "-3", *OUT], "-3"),
    "target p text": (optimize_cmd.main, [*OPT, "--question", "Q?", "--target-p", "high", *OUT], "high"),
    # text
    "prompt of control characters": (optimize_cmd.main, ["--preset", "tiny", "--prompt", "\x07\x00 \t", "--question",
                                                      "Q?", *OUT], "prompt is empty"),
    "prompt of zero-width spaces": (generate_cmd.main, ["--preset", "tiny", "--prompt", "\u200b\u200b", "--out",
                                                    "x.png"], "prompt is empty"),
    "question whitespace": (optimize_cmd.main, [*OPT, "--question", "   ", *OUT], "question is empty"),
    "answer too long": (optimize_cmd.main, [*OPT, "--question", "Q?", "--answer", "yes " * 40, *OUT],
                        "expected answer has 159 characters; at most 100"),
    "prompt too long": (generate_cmd.main, ["--preset", "tiny", "--prompt", "x" * 3000, "--out", "x.png"],
                        "at most 2000"),
    "prompts file not utf-8": (self_reward_cmd.main, ["--preset", "tiny", "--prompts", "latin1.txt", "--out", "OUT"],
                               r"latin1.txt' is not UTF-8"),
    # options that make a run meaningless
    "beta nan": (self_reward_cmd.main, ["--preset", "tiny", "--prompts", "prompts.txt", "--beta", "nan", "--out",
                                    "OUT"], "--beta nan must be a positive number"),
    "renoise backwards": (optimize_cmd.main, [*OPT, "--question", "Q?", "--renoise", "1,0.5", *OUT], "re-noising"),
    "vlm lora not an adapter": (refine_cmd.main, ["--preset", "tiny", "--prompt", "a cat", "--vlm-lora",
                                              "not_an_adapter"], "not a peft adapter folder"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line(case, tmp_path, capsys, monkeypatch):
    main, argv, pattern = CASES[case]
    files = make_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = [str(files.get(a, a)).replace("OUT", str(tmp_path / "out")) for a in argv]
    line = one_line(main, argv, capsys)
    assert re.search(pattern, line), line
    assert not (tmp_path / "out" / "x.safetensors").exists()


@pytest.fixture(scope="module")
def sana_lora(tiny_sana_models, tmp_path_factory):
    generator, vlm = tiny_sana_models
    result = optimize.optimize(generator, vlm, "a desert", QA, steps=1, progress=False, eval_seeds=0)
    path = tmp_path_factory.mktemp("sana") / "sana.safetensors"
    save_result(result, path, generator, "a desert", QA)
    return path


def test_a_lora_for_another_model_is_refused_and_the_pipeline_untouched(tiny_models, sana_lora, tmp_path, capsys):
    generator, _ = tiny_models
    base = np.asarray(generator.generate("a desert", 3))
    # A Sana LoRA on the Flux-shaped tiny model: refused by its shapes, before load_state_dict.
    with pytest.raises(ValueError, match=r"LoRA file 'sana.safetensors' (was made for preset 'tiny-sana'|does not "
                                         r"fit this model)"):
        generator.generate("a desert", 3, lora_path=sana_lora)
    tensors, header = lora.read_lora(sana_lora)
    del header["dual_process.preset"]  # no header to go by: the shapes still say no
    anonymous = tmp_path / "anonymous.safetensors"
    from safetensors.torch import save_file

    save_file(tensors, str(anonymous), metadata=header)
    with pytest.raises(ValueError, match="anonymous.safetensors' (adapts|does not fit)"):
        generator.generate("a desert", 3, lora_path=anonymous)
    assert not getattr(generator.transformer, "peft_config", None)
    assert np.array_equal(np.asarray(generator.generate("a desert", 3)), base)
    # Through the CLI: one line.
    line = one_line(generate_cmd.main, ["--preset", "tiny", "--prompt", "a", "--lora", str(sana_lora), "--out",
                                    str(tmp_path / "x.png")], capsys)
    assert "sana.safetensors" in line and not (tmp_path / "x.png").exists()


def test_a_lora_made_for_another_preset_is_refused(tiny_models, tmp_path):
    generator, vlm = tiny_models
    result = optimize.optimize(generator, vlm, "a beach", QA, steps=1, progress=False, eval_seeds=0)
    path = tmp_path / "toy.safetensors"
    save_result(result, path, generator, "a beach", QA)
    tensors, header = lora.read_lora(path)
    from safetensors.torch import save_file

    header["dual_process.preset"] = "toy"  # same shapes as tiny, another model's weights
    save_file(tensors, str(path), metadata=header)
    with pytest.raises(ValueError, match="was made for preset 'toy'; this model is preset 'tiny'"):
        generator.generate("a beach", 1, lora_path=path)
    assert not getattr(generator.transformer, "peft_config", None)


def test_a_nan_loss_stops_the_run_saves_nothing_and_leaves_the_base(tiny_models, monkeypatch, tmp_path):
    generator, vlm = tiny_models
    base = np.asarray(generator.generate("a beach", 2))
    calls = {"n": 0}
    real = vlm.answer_nll

    def flaky(pixels, qa):
        calls["n"] += 1
        nll = real(pixels, qa)
        return nll * float("nan") if calls["n"] == 3 else nll

    monkeypatch.setattr(vlm, "answer_nll", flaky)
    with pytest.raises(ValueError, match="the loss became nan at step 3: the run was stopped and no LoRA was saved"):
        optimize.optimize(generator, vlm, "a beach", QA, steps=10, progress=False)
    monkeypatch.undo()
    assert not getattr(generator.transformer, "peft_config", None)
    assert np.array_equal(np.asarray(generator.generate("a beach", 2)), base)


def test_a_failed_write_never_leaves_half_a_file(tiny_models, tmp_path, monkeypatch):
    """A LoRA file and its JSON are written to a temporary name and renamed: a crash mid-write keeps the old file."""
    generator, vlm = tiny_models
    result = optimize.optimize(generator, vlm, "a beach", QA, steps=1, progress=False, eval_seeds=0)
    path = tmp_path / "x.safetensors"
    save_result(result, path, generator, "a beach", QA)
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("pipelines.lora.save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_result(result, path, generator, "a beach", QA)
    assert path.read_bytes() == good and json.loads(Path(f"{path}.json").read_text())["steps"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    torch.manual_seed(0)
