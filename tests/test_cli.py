"""The command-line tools as a user runs them: each control end to end, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import lora
from pipelines.commands import bench as bench_cmd
from pipelines.commands import generate as generate_cmd
from pipelines.commands import optimize as optimize_cmd
from pipelines.commands import self_reward as self_reward_cmd

ROOT = Path(__file__).resolve().parent.parent


def run_main(main, argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def reference_image(path: Path) -> Path:
    img = np.full((80, 80, 3), 255, np.uint8)
    img[:, 30:34] = (255, 0, 0)
    img[50:, :] = (40, 90, 200)
    Image.fromarray(img).save(path)
    return path


CONTROL_ARGS = {
    "horizon": ["--control", "horizon", "--y", "0.35", "--gen-device", "cpu", "--vlm-device", "cpu",
                "--text-encoders", "offload"],
    "palette": ["--control", "palette", "--palette", "pastel"],
    "palette-colors": ["--control", "palette", "--colors", "#2b1d0e;#8c6d46;rgb(200, 180, 150)"],
    "palette-image": ["--control", "palette", "--palette-image", "REF", "--swatches", "3"],
    "depth": ["--control", "depth", "--a", "0.3,0.6", "--b", "0.7,0.4", "--relation", "closer"],
    "line-weight": ["--control", "line-weight", "--px", "3"],
    "composition": ["--control", "composition", "--reference", "REF", "--question",
                    "Is the red line a vertical object like a tree?"],
}


@pytest.mark.parametrize("name", list(CONTROL_ARGS))
def test_each_control_optimizes_through_the_cli(name, tmp_path, capsys):
    args = [a if a != "REF" else str(reference_image(tmp_path / "ref.png")) for a in CONTROL_ARGS[name]]
    out = tmp_path / f"{name}.safetensors"
    code, _, err = run_main(optimize_cmd.main, ["--preset", "tiny", "--prompt", "a tropical beach", *args,
                                            "--steps", "2", "--out", str(out)], capsys)
    assert code == 0, err
    meta = lora.lora_metadata(out)
    assert meta["steps"] == 2 and meta["overlay"]
    assert all(q.endswith("Answer with Yes or No.") for q, _ in meta["questions"])
    if name == "palette-image":
        assert meta["overlay"].count("#") == 3  # the three dominant colours of the reference
    if name == "composition":
        assert "resized" in err  # the 80x80 reference was fitted to 112x112, and the user is told
        assert meta["questions"][0][0].startswith("Is the red line a vertical object")


BAD = {
    "empty prompt": (optimize_cmd.main, ["--prompt", " ", "--question", "Q?"], "prompt is empty"),
    "steps 0": (optimize_cmd.main, ["--prompt", "a", "--question", "Q?", "--steps", "0"], "steps 0"),
    "steps 1e6": (optimize_cmd.main, ["--prompt", "a", "--question", "Q?", "--steps", "1000000"], "steps 1000000"),
    "unknown preset": (optimize_cmd.main, ["--preset", "flux-turbo", "--prompt", "a", "--question", "Q?"],
                       "flux-turbo.*available: tiny"),
    "unreadable overlay": (optimize_cmd.main, ["--prompt", "a", "--question", "Q?", "--overlay", "BROKEN"],
                           "broken.png"),
    "missing overlay": (optimize_cmd.main, ["--prompt", "a", "--question", "Q?", "--overlay", "nope.png"], "nope.png"),
    "no question": (optimize_cmd.main, ["--prompt", "a"], "--question"),
    "horizon outside": (optimize_cmd.main, ["--prompt", "a", "--control", "horizon", "--y", "1.5"], "1.5"),
    "horizon missing y": (optimize_cmd.main, ["--prompt", "a", "--control", "horizon"], "--y"),
    "bad colour": (optimize_cmd.main, ["--prompt", "a", "--control", "palette", "--colors", "#123;blurple"],
                   "blurple"),
    "points on top": (optimize_cmd.main, ["--prompt", "a", "--control", "depth", "--a", "0.5,0.5", "--b", "0.5,0.51"],
                      "0.5"),
    "bad point": (optimize_cmd.main, ["--prompt", "a", "--control", "depth", "--a", "left", "--b", "0.5,0.5"], "left"),
    "line too thick": (optimize_cmd.main, ["--prompt", "a", "--control", "line-weight", "--px", "40"], "40"),
    "missing lora": (generate_cmd.main, ["--prompt", "a", "--lora", "missing.safetensors"], "missing.safetensors"),
    "lora not safetensors": (generate_cmd.main, ["--prompt", "a", "--lora", "NOTES"], "notes.txt"),
    "scale out of range": (generate_cmd.main, ["--prompt", "a", "--scale", "50"], "50"),
    "bench unknown preset": (bench_cmd.main, ["--preset", "nope"], "nope"),
    "bench steps 0": (bench_cmd.main, ["--steps", "0"], "--steps 0"),
    "bench views -1": (bench_cmd.main, ["--views", "-1"], "-1"),
    "rank 0": (optimize_cmd.main, ["--prompt", "a", "--question", "Q?", "--rank", "0"], "rank 0"),
    "lr 0": (optimize_cmd.main, ["--prompt", "a", "--question", "Q?", "--lr", "0"], "learning rate 0"),
    "composition with answers": (optimize_cmd.main, ["--prompt", "a", "--control", "composition", "--reference",
                                                 "NOTES", "--question", "Q?", "--answer", "No"], "--answer"),
    "self-reward epochs 0": (self_reward_cmd.main, ["--prompts", "NOTES", "--epochs", "0"], "epochs 0"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_with_one_line_naming_the_problem(case, tmp_path, capsys):
    main, argv, pattern = BAD[case]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("hello")
    argv = [str(tmp_path / "broken.png") if a == "BROKEN" else str(tmp_path / "notes.txt") if a == "NOTES" else a
            for a in argv]
    out_flag = ["--out", str(tmp_path / ("x.png" if main is generate_cmd.main else "x.safetensors"))]
    code, _, err = run_main(main, argv + (out_flag if main in (optimize_cmd.main, generate_cmd.main) else []), capsys)
    assert code not in (0, None)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    import re
    assert re.search(pattern, lines[0]), lines[0]


def test_bench_reports_median_step_time_and_memory(tmp_path, capsys):
    code, out, err = run_main(bench_cmd.main, ["--preset", "tiny", "--steps", "3", "--warmup", "1",
                                               "--generations", "2",
                                           "--json", str(tmp_path / "b.json")], capsys)
    assert code == 0, err
    import json
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["timed_steps"] == 3 and result["s_per_step_median"] > 0
    assert result["s_per_100_steps"] == pytest.approx(100 * result["s_per_step_median"], rel=0.01)
    assert result["cpu_peak_rss_gb"] > 0 or result.get("gpu_reserved_gb", 0) > 0
    assert (result["views"], result["keep"], result["keep_prompt"]) == (0, 0.0, False)  # tiny's own steering


def test_bench_times_the_steering_it_is_given(tmp_path, capsys):
    code, out, err = run_main(bench_cmd.main, ["--preset", "tiny", "--steps", "2", "--warmup", "0", "--generations",
                                               "1", "--views", "2", "--keep", "1", "--keep-prompt",
                                               "--json", str(tmp_path / "b.json")], capsys)
    assert code == 0, err
    import json
    result = json.loads((tmp_path / "b.json").read_text())
    assert (result["views"], result["noises"], result["keep"], result["keep_prompt"]) == (2, 1, 1.0, True)


def test_lower_case_answers_are_the_answer_token(tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    code, _, err = run_main(optimize_cmd.main, ["--prompt", "a beach", "--question", "Is it sunny?", "--answer", "yes",
                                            "--steps", "1", "--out", str(out)], capsys)
    assert code == 0, err
    assert lora.lora_metadata(out)["questions"] == [["Is it sunny? Answer with Yes or No.", "Yes"]]


@pytest.mark.parametrize("preset,flag,guarded", [("toy", [], True), ("toy", ["--no-keep-prompt"], False),
                                                  ("tiny", [], False), ("tiny", ["--keep-prompt"], True)])
def test_the_prompts_own_question_follows_the_preset_unless_a_flag_says(preset, flag, guarded, tmp_path, capsys):
    # toy's measured default asks 'Does this image show {prompt}?' too; the real and tiny presets keep the paper's
    out = tmp_path / "x.safetensors"
    code, _, err = run_main(optimize_cmd.main, ["--preset", preset, "--prompt", "a beach at noon", "--control",
                                                "horizon", "--y", "0.6", "--steps", "1", "--eval-seeds", "0",
                                                "--views", "0", "--keep", "0", *flag, "--out", str(out)], capsys)
    assert code == 0, err
    asked = [q for q, _ in lora.lora_metadata(out)["questions"]]
    assert any("a beach at noon" in q for q in asked) == guarded and len(asked) == 1 + guarded


def test_a_mistyped_relative_folder_lists_what_is_there(tmp_path, monkeypatch, capsys):
    (tmp_path / "models" / "flux-local").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(generate_cmd.main, ["--prompt", "a", "--generator", "models/flux-locl", "--out", "x.png"],
                            capsys)
    assert code == 2 and "models/flux-locl" in err and "flux-local" in err


def test_optimize_writes_the_unseen_seed_evaluation_beside_the_lora(tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    code, stdout, err = run_main(optimize_cmd.main, ["--preset", "tiny", "--prompt", "a beach", "--control", "horizon",
                                                 "--y", "0.4", "--steps", "2", "--alpha", "10", "--eval-seeds", "3",
                                                 "--out", str(out)], capsys)
    assert code in (0, None), err
    line = next(ln for ln in stdout.splitlines() if ln.startswith("unseen seeds:"))
    side = json.loads((tmp_path / "x.safetensors.json").read_text())
    unseen = side["unseen_seeds"]
    assert line == f"unseen seeds: P {unseen['mean_scale0']:.2f} -> {unseen['mean_scale1']:.2f} (3 seeds)"
    assert len(unseen["p_scale0"]) == 3 and len(side["history"]) == 2
    meta = lora.lora_metadata(out)
    assert meta["unseen_seeds"] == unseen and meta["alpha"] == 10.0
    # The file says alpha = rank (scale 1) and carries alpha / rank = 2.5 folded into its B matrices.
    assert json.loads(lora.read_lora(out)[1]["lora_adapter_metadata"])["transformer.lora_alpha"] == 4
    assert meta["folded_scale"] == 2.5


@pytest.mark.parametrize("argv,message", [
    (["--renoise", "0.8,0.2"], "re-noising range 0.8,0.2 must satisfy 0 < LO <= HI <= 1"),
    (["--renoise", "half"], "--renoise 'half' must be two numbers"),
    (["--alpha", "-1"], "LoRA alpha -1.0 must be a positive number"),
    (["--eval-seeds", "100"], "--eval-seeds 100 must be from 0 to 64"),
])
def test_fidelity_flags_refuse_bad_values_in_one_line(argv, message, tmp_path, capsys):
    code, _, err = run_main(optimize_cmd.main, ["--preset", "tiny", "--prompt", "a beach", "--question", "Is it?",
                                            "--out", str(tmp_path / "x.safetensors"), *argv], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
