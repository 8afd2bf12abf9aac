"""The app's logic as plain functions, without a server or a browser (fast): controls and questions from the page's
inputs, the run behind Optimize (Stop keeps what was trained), the results block, messages, the page's structure
and its defaults. The endpoints themselves are driven through gradio_client in test_app.py (slow)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from app_fixtures import dots_layer, horizon_layer, pixels
from PIL import Image

import overlays
import studio
from overlays import composition, line_weight
from overlays.build import build
from pipelines import checks, optimize
from pipelines.lora import lora_metadata
from pipelines.optimize import Evaluation, Step, with_prompt_guard
from pipelines.presets import PAGE_DEFAULTS, get_preset
from studio import context, examples, gpu, messages, page, results, runs, sessions
from studio import questions as question_box
from studio.tabs import score, use_a_lora, visual_prompts

QA = [("Is the horizon of the scene aligned with the red line? Answer with Yes or No.", "Yes")]


def models():
    return gpu.models(get_preset("tiny"))


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> context.App:
    return context.App(get_preset("tiny"), tmp_path_factory.mktemp("studio"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> gr.Blocks:
    return studio.build_demo("tiny", output_dir=tmp_path_factory.mktemp("page"))


# ---------- controls and questions from the page's inputs -------------------------------------------------------


def test_parse_questions():
    pairs = question_box.parse_questions("Is it red? | Yes\n\n# a comment\nIs it blue? | No\nWhat colour is it? | red\n"
                                   "Is it round?")
    assert pairs == [("Is it red? Answer with Yes or No.", "Yes"), ("Is it blue? Answer with Yes or No.", "No"),
                     ("What colour is it?", "red"), ("Is it round? Answer with Yes or No.", "Yes")]
    assert question_box.format_questions(pairs[:1]) == "Is it red? Answer with Yes or No. | Yes"
    for text, message in [("", "no questions"), (" | Yes", "line 1.*question is empty"),
                          ("ok?\nIs it? |  ", "line 2.*answer after '|' is empty"),
                          ("\n".join(["Q?"] * 9), "9 questions"), ("x" * 600, "600 characters")]:
        with pytest.raises(ValueError, match=message):
            question_box.parse_questions(text)


def test_parse_drafted():
    reply = ("Here are questions:\n1. Is there a red apple on the table?\n2) Is the glass full of milk?\n"
             "- is the table made of wood?\n* Is there a red apple on the table?\nYes?\n\"Is the light warm?\" ok")
    assert question_box.parse_drafted(reply, 10) == ["Is there a red apple on the table?", "Is the glass full of milk?",
                                               "Is the table made of wood?", "Is the light warm?"]
    assert question_box.parse_drafted(reply, 2) == ["Is there a red apple on the table?", "Is the glass full of milk?"]
    assert question_box.parse_drafted("kground", 3) == []


def test_draft_questions_uses_the_vlm_and_falls_back():
    class Fake:
        def __init__(self, reply):
            self.reply, self.prompts = reply, []

        def generate_text(self, prompt, max_new_tokens=128):
            self.prompts.append(prompt)
            return [self.reply]

    vlm = Fake("1. Is the apple red?\n2. Is the milk in a glass?")
    questions, note = question_box.draft_questions(vlm, "an apple and milk", 2)
    assert questions == ["Is the apple red?", "Is the milk in a glass?"] and "drafted by the VLM" in note
    assert '"an apple and milk"' in vlm.prompts[0]
    questions, note = question_box.draft_questions(Fake("zzz"), "an apple", 3)
    assert len(questions) == 3 and "no usable question" in note and "'zzz'" in note
    with pytest.raises(ValueError, match="number of questions"):
        question_box.draft_questions(vlm, "an apple", 0)


def test_build_control_from_a_drawing():
    ctrl = build(["horizon"], 112, {}, drawing=[horizon_layer(y=0.4, tilt_px=0)])
    assert abs(ctrl.spec.y - 0.4) < 0.02 and abs(ctrl.spec.tilt) < 0.5
    assert ctrl.overlay.size == (112, 112) and ctrl.questions[0][1] == "Yes"
    ctrl = build(["depth"], 112, {}, drawing={"layers": [dots_layer([(0.7, 0.3), (0.2, 0.8)])]})
    assert ctrl.spec.a == pytest.approx((0.2, 0.8), abs=0.01)  # the left dot is Point A
    ctrl = build(["horizon"], 112, {"horizon_y": 0.25, "horizon_tilt": -3})  # numbers when nothing drawn
    assert (ctrl.spec.y, ctrl.spec.tilt) == (0.25, -3.0)
    ref = Image.new("RGBA", (300, 200), (0, 0, 255, 255))
    ctrl = build(["composition"], 112, {"composition_reference": ref, "composition_mode": "solid"},
                 drawing=[horizon_layer()])
    assert ctrl.overlay.size == (112, 112) and ctrl.notes and "300x200" in ctrl.notes[0]
    assert ctrl.questions == [(optimize.with_yes_no(composition.DEFAULT_QUESTION), "Yes")]
    with pytest.raises(ValueError, match="line weight.*12"):
        build(["line-weight"], 112, {"line_px": 12})


def test_params_from_canvas_scales_line_weight():
    layer = np.zeros((512, 512, 4), np.uint8)
    layer[400:420, 100:400] = (255, 0, 0, 255)  # 20 px on a 512 canvas
    assert line_weight.measured_px(layer, 112) == 4
    assert overlays.CONTROLS["palette"].drawn is None  # set with its own inputs: a drawing is not read
    assert build(["palette"], 112, {"palette_colors": "#ff0000 #00ff00"}, drawing=[layer]).spec.colors == (
        (255, 0, 0), (0, 255, 0))
    # A drawn stroke wins over the slider, and the user is told what was measured.
    ctrl = build(["line-weight"], 112, {"line_px": 2}, drawing=[layer])
    assert ctrl.spec.px == 4 and "measured from your stroke: 4 px" in ctrl.notes[0]
    assert build(["line-weight"], 112, {"line_px": 2}, drawing=[]).spec.px == 2


def test_parse_questions_normalises_yes_and_no():
    assert question_box.parse_questions("Is it red? | yes\nIs it blue? | NO") == [
        ("Is it red? Answer with Yes or No.", "Yes"), ("Is it blue? Answer with Yes or No.", "No")]


def test_composition_reference_as_an_array_is_resized_with_a_note():
    reference = np.full((200, 300, 4), 255, np.uint8)
    reference[50:60, :, :3] = (255, 0, 0)
    ctrl = build(["composition"], 112, {"composition_reference": reference})
    assert ctrl.overlay.size == (112, 112) and "300x200" in ctrl.notes[0]


def test_checks_name_the_value():
    assert checks.check_seed(7.0) == 7
    for call, message in [(lambda: checks.check_seed(1.5), "1.5"), (lambda: checks.check_seed(True), "True"),
                          (lambda: checks.check_steps(None), "None"),
                          (lambda: checks.check_scale(5.5, checks.APP_MAX_SCALE), "5.5"),
                          (lambda: checks.check_scale(float("nan")), "nan"),
                          (lambda: checks.check_prompt(3), "not text")]:
        with pytest.raises(ValueError, match=message):
            call()


def test_choose_preset():
    assert studio.choose_preset(None, None, has_gpu=False) == ("toy", None)
    name, note = studio.choose_preset("flux-schnell", None, has_gpu=False)
    assert name == "toy" and "No GPU" in note and "flux-schnell" in note
    assert studio.choose_preset(None, "tiny-dev", has_gpu=False) == ("tiny-dev", None)
    assert studio.choose_preset(None, None, has_gpu=True) == ("flux-schnell", None)
    assert studio.choose_preset("sana", "flux-dev", has_gpu=True) == ("sana", None)
    with pytest.raises(ValueError, match="unknown preset 'big'"):
        studio.choose_preset("big", None, has_gpu=True)


def test_optimize_stream_stops_when_closed():
    """Closing the stream (what Stop does) sets the event: the worker ends within a step, adapter removed."""
    generator, vlm = models()
    cond = generator.encode("a cat")
    stream = runs.optimize_stream(generator, vlm, cond, [("Is it a cat? Answer with Yes or No.", "Yes")],
                                    lock=threading.Lock(), steps=1000, seed=0)
    first = next(stream)
    assert isinstance(first, Step) and first.step == 1
    start = time.monotonic()
    stream.close()
    assert time.monotonic() - start < 5 and runs.active_runs() == 0
    assert not getattr(generator.transformer, "peft_config", None)


def test_examples_manifest_is_complete():
    manifest = examples.load_examples()
    assert manifest is not None and manifest["preset"] == "toy"  # the README's pictures come from these
    assert {ex["control"] for ex in manifest["examples"]} == set(overlays.CONTROLS)
    for ex in manifest["examples"]:
        for key in ("before", "after", "overlay", "after_overlay", "lora", "canvas"):
            assert Path(ex[key]).is_file(), (ex["control"], key)
        assert lora_metadata(ex["lora"])["prompt"] == ex["prompt"]
        assert 0 < ex["p_before"] < 1 and 0 < ex["p_after"] < 1
        # run as the page runs them, its keep-prompt box at the preset's value: the prompt's question asked too
        guarded = with_prompt_guard([tuple(q) for q in ex["questions"]], ex["prompt"])
        assert [tuple(q) for q in ex["asked"]] == guarded == [tuple(q) for q in lora_metadata(ex["lora"])["questions"]]
    ex = manifest["examples"][1]
    now = np.asarray(gpu.models(get_preset("toy"))[0].generate(ex["prompt"], ex["seed"]).convert("RGB")).astype(int)
    # Stale means another picture; one level of rounding on a few pixels is another CPU's float arithmetic
    # (seen: one pixel off by 1 on a machine other than the one that made the examples)
    off = np.abs(now - pixels(ex["before"]).astype(int))
    assert off.max() <= 2 and (off > 0).mean() < 0.01, \
        "the precomputed examples are stale: python -m studio.examples --preset toy"



# ---------- the run behind Optimize, and Stop ------------------------------------------------------------------


def run_events(tmp_path: Path, steps: int, stop_after: int | None, stop_first: bool = False) -> list[runs.RunEvent]:
    generator, vlm = models()
    stop_file = tmp_path / "stop"
    if stop_first:
        stop_file.touch()
    events = []
    for event in runs.run(generator, vlm, "a cat", 1, QA, steps=steps, out_path=tmp_path / "x.safetensors",
                          lock=threading.Lock(), stop_file=stop_file):
        events.append(event)
        if event.kind == "step" and event.step.step == stop_after:
            stop_file.touch()  # what the page's Stop button does
    return events


def test_stop_keeps_what_was_trained_and_judges_it(tmp_path):
    events = run_events(tmp_path, steps=50, stop_after=3)
    done = events[-1]
    # The worker may have begun the next step when the stop file appears: it finishes that one, then stops.
    assert done.kind == "done" and done.stopped_at in (3, 4) and len(done.history) == done.stopped_at
    assert lora_metadata(done.path)["steps"] == done.stopped_at  # the LoRA so far, saved
    assert done.after is not None and done.unseen.skipped is None and len(done.unseen.images_lora) == 4
    assert not getattr(models()[0].transformer, "peft_config", None)


def test_stop_before_the_first_step_saves_nothing(tmp_path):
    done = run_events(tmp_path, steps=5, stop_after=None, stop_first=True)[-1]
    assert done.kind == "done" and done.stopped_at == 0 and done.path is None
    assert not (tmp_path / "x.safetensors").exists()


def test_the_stop_button_touches_only_its_tabs_running_job(tmp_path):
    assert "Nothing is running" in results.request_stop(None, "visual")
    session = {"active": {"visual": str(tmp_path / "stop-visual-1")}}
    assert "Nothing is running" in results.request_stop(session, "ask")
    assert "Stopping after this step" in results.request_stop(session, "visual")
    assert (tmp_path / "stop-visual-1").exists() and not (tmp_path / "stop-ask-1").exists()


def test_ctrl_c_in_the_cli_finishes_the_step_and_keeps_the_lora():
    import os
    import signal

    with optimize.stop_on_interrupt() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop()  # the run ends after its step and is saved
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C abandons it
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)


# ---------- the results block -------------------------------------------------------------------------------------


def test_results_read_as_the_page_shows_them(tmp_path):
    history = [Step(1, 0.7, 0.5, 0.1), Step(2, 0.3, 0.74, 0.2)]
    assert list(results.history_frame(history)["p"]) == [0.5, 0.74]
    assert "not evaluated (the run was stopped)" in results.unseen_markdown(Evaluation(skipped="the run was stopped"))
    image = Image.new("RGB", (112, 112))
    unseen = Evaluation(seeds=[7, 8], p_base=[0.2, 0.3], p_lora=[0.9, 0.8], images_base=[image] * 2,
                        images_lora=[image] * 2)
    assert "**0.250** at LoRA scale 0 -> **0.850** at scale 1" in results.unseen_markdown(unseen)
    captions = [c for _, c in results.unseen_gallery(unseen, None, 112)]
    assert captions == ["seed 7, scale 0: P 0.20", "seed 8, scale 0: P 0.30", "seed 7, scale 1: P 0.90",
                        "seed 8, scale 1: P 0.80"]
    with pytest.raises(ValueError, match="no LoRA to continue from"):
        results.continued_lora({"lora": {}}, "visual", True)
    assert results.continued_lora(None, "visual", False) is None
    assert results.download_state(None)["interactive"] is False
    assert results.download_state(None)["label"] == results.NO_DOWNLOAD_LABEL
    assert results.download_state(str(tmp_path / "x.safetensors"))["interactive"] is True


# ---------- messages --------------------------------------------------------------------------------------------


def test_what_a_failure_reads_as():
    assert messages.user_error(ValueError("'the prompt is empty'"), "x").message == "The prompt is empty"
    oom = messages.user_error(torch.OutOfMemoryError("CUDA out of memory"), "optimizing")
    assert oom.message.startswith("Out of GPU memory while optimizing")
    other = messages.user_error(KeyError("k"), "scoring")
    assert "Something went wrong while scoring (KeyError" in other.message and "keeps serving" in other.message
    assert sessions.slug("A Beach, at NOON!") == "a-beach-at-noon" and sessions.slug("!!!") == "lora"
    assert messages.field_name(gr.Textbox(label="Horizon height (a fraction; when not drawn)")) == "Horizon height"
    assert messages.field_name(gr.Checkbox(label="Sampled verdicts: average three")) == "Sampled verdicts"
    assert messages.unreadable(Image.DecompressionBombError("x")).startswith("an image over 40 MP")


# ---------- the page ----------------------------------------------------------------------------------------------


def test_every_child_of_the_tab_bar_is_a_tab(demo):
    """A component made between two tabs becomes a child of gr.Tabs, and the browser then doubles the next tab's
    button (the bug a newcomer met; the browser test clicks through them)."""
    bars = [b for b in demo.blocks.values() if isinstance(b, gr.Tabs)]
    assert bars and all(isinstance(child, gr.Tab) for bar in bars for child in bar.children)
    assert [child.label for child in bars[0].children] == ["Visual prompts", "Ask anything", "Use a LoRA", "Score",
                                                           "Refine prompt"]


def test_the_page_load_shows_no_image(demo):
    """On load the page refreshes the preview's note only: its image would be the canvas's background, one file in
    Gradio's cache that it would rewrite while the page fetches it (a truncated image, an ASGI traceback)."""
    loads = [fn for fn in demo.fns.values() if any(event == "load" for _, event in fn.targets)]
    assert loads and not any(isinstance(out, gr.Image) for fn in loads for out in fn.outputs)


def test_fields_open_with_prompts_the_preset_can_draw():
    toy = get_preset("toy")
    for field in PAGE_DEFAULTS:
        text = toy.page_default(field)
        if field != "ask_questions":
            assert toy.prompt_note(text) is None, (field, text)  # a prompt the toy world knows
    assert "green field" in toy.page_default("ask_questions")
    assert get_preset("flux-schnell").page_default("refine") == PAGE_DEFAULTS["refine"]
    assert "toy world" in page.header(toy, 4, None).lower()


def test_the_landing_preview_explains_instead_of_erring(app):
    values = visual_prompts.setting_defaults()
    note = visual_prompts.landing_note(app, None, "horizon", None, "", values)
    assert note.startswith("_Nothing to show yet") and "type its height" in note
    _, note = visual_prompts.preview(app, None, "horizon", None, "", values | {"horizon_y": " 0.4 "})
    assert "horizon at y=0.40" in note
    _, note = visual_prompts.preview(app, None, "horizon", None, "", values | {"horizon_y": "high"})
    assert "**Overlay:** Horizon height 'high' is not a number" in note
    _, note = visual_prompts.preview(app, None, "horizon", None, "", values | {"horizon_y": "0"})
    assert "**Overlay:** horizon height 0.0 is outside (0, 1)" in note


def test_use_a_lora_logic():
    assert use_a_lora.stacked_scales(["a", "b"], "0.7, 0.5") == [0.7, 0.5]
    assert use_a_lora.stacked_scales(["a"], "") == [1.0]
    with pytest.raises(ValueError, match="2 stacked LoRA scales for 1"):
        use_a_lora.stacked_scales(["a"], "1 2")
    with pytest.raises(ValueError, match="made for preset 'toy'; this app runs 'tiny'"):
        use_a_lora.check_preset_match({"preset": "toy"}, "tiny", "x.safetensors")
    text = use_a_lora.metadata_markdown({"preset": "toy", "steps": 3, "prompt": "a beach", "questions": QA}, "x")
    assert "preset `toy`, 3 steps" in text and "-> **Yes**" in text


def test_a_huge_score_upload_is_downscaled_with_a_note():
    image, notes = score.uploaded(Image.new("RGB", (4096, 1024)), "Image A")
    assert image.size == (checks.MAX_UPLOAD_SIDE, 512) and "Image A: the 4096x1024 image" in notes[0]
    assert score.uploaded(None, "Image A") == (None, [])


# ---------- a quiet start -----------------------------------------------------------------------------------------


@pytest.mark.slow  # a fresh Python: what a user sees on the terminal when the app starts
def test_starting_and_applying_a_lora_print_no_warnings_of_ours(tmp_path):
    import subprocess
    import sys

    code = ("import warnings; warnings.simplefilter('default')\n"
            "from pipelines import optimize\nfrom pipelines.loading import load_generator, load_vlm\n"
            "from pipelines.presets import get_preset\n"
            "preset = get_preset('toy'); generator = load_generator(preset, 'cpu'); vlm = load_vlm(preset, 'cpu')\n"
            "qa = [('Is it a beach? Answer with Yes or No.', 'Yes')]\n"
            "result = optimize.optimize(generator, vlm, 'a beach at noon', qa, steps=1, eval_seeds=0, progress=False)\n"
            "optimize.save_result(result, 'x.safetensors', generator, 'a beach at noon', qa)\n"
            "generator.generate('a beach at noon', 1, lora_path='x.safetensors', scale=1.0)\nprint('done')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert done.returncode == 0 and "done" in done.stdout, done.stderr[-2000:]
    for noise in ("torchvision", "torch_dtype", "No LoRA keys", "Warning"):
        assert noise not in done.stderr, done.stderr[-2000:]
