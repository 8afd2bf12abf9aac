"""The Gradio app on the tiny preset: every public endpoint through gradio_client, bad inputs, the shared
pipeline left bit-identical after a run / a stop / an error, two users at once, a full queue, out of memory,
and the app-facing logic in studio/ (controls, questions, runs, examples)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from app_fixtures import (
    PROMPT,
    SEED,
    dots_layer,
    editor,
    horizon_layer,
    pixels,
    running,
    save_png,
    server_fixture,  # noqa: F401  (the "server" fixture)
)
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from pipelines import optimize
from pipelines.lora import lora_metadata
from pipelines.presets import get_preset
from studio import controls, gpu, runs

pytestmark = pytest.mark.slow  # an in-process server (and a browser): minutes, not seconds

ROOT = Path(__file__).resolve().parent.parent
# outputs of /optimize and /ask_optimize, in order
STATUS, LIVE, LOSS, P, SLIDER, SCORES, DOWNLOAD, UNSEEN = range(8)


def fails(message: str):
    """The call is refused with a readable message (case-insensitive regex)."""
    return pytest.raises(AppError, match="(?i)" + message)


def models():
    return gpu.models(get_preset("tiny"))


def base_pixels(client) -> np.ndarray:
    image, _, _ = client.predict(PROMPT, SEED, api_name="/generate")
    return pixels(image)


def assert_clean(reference: np.ndarray, client) -> None:
    """No adapter left in the shared transformer, and the base image is bit-identical to the reference."""
    generator, _ = models()
    assert not getattr(generator.transformer, "peft_config", None)
    assert np.array_equal(base_pixels(client), reference)


def wait_for_no_runs(timeout: float = 20.0) -> float:
    start = time.monotonic()
    while runs.active_runs():
        assert time.monotonic() - start < timeout, "the optimization worker did not stop"
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The base image straight from the generator, before the server ran anything."""
    generator, _ = models()
    return np.asarray(generator.generate(PROMPT, SEED).convert("RGB"))


def optimize_args(tmp_path, control="horizon", layers=None, **extra):
    layers = [horizon_layer()] if layers is None else layers
    return dict(prompt=PROMPT, seed=SEED, control=control, canvas=editor(tmp_path, *layers), questions="", steps=6,
                api_name="/optimize") | extra


# ---------- endpoints ----------------------------------------------------------------------------


def test_the_steering_options_reach_the_run_and_its_file_and_bad_ones_are_one_line(server, tmp_path):
    client = server.client()
    final = client.predict(**optimize_args(tmp_path, steps=1, views=2, noises=2, keep_weight=1.5))
    steering = lora_metadata(final[DOWNLOAD])["steering"]
    assert steering["views"]["count"] == 2 and steering["noises"] == 2 and steering["keep"] == 1.5
    assert "After / before: texture x" in final[SCORES]
    with fails("noises per step 9 must be a whole number from 1 to 4"):
        client.predict(**optimize_args(tmp_path, steps=1, noises=9))
    with fails("judged views 2.5"):
        client.predict(**optimize_args(tmp_path, steps=1, views=2.5))


def test_the_guard_speaks_beside_the_before_and_after():
    from pipelines.steering import Guard
    from studio.results import unseen_markdown

    unseen = optimize.Evaluation(seeds=[1, 2], p_base=[0.1, 0.2], p_lora=[0.9, 0.95])
    unseen.guard = Guard(2.1, 0.3, (0.9, 0.4), ["the picture gained a grid texture (high-frequency energy x2.1)"])
    text = unseen_markdown(unseen)
    assert "texture x2.10" in text and "variety across seeds x0.30" in text and "0.90 -> 0.40" in text
    assert unseen.guard.line().startswith("the judge may be fooled: the picture gained a grid texture")


def test_endpoints_are_the_documented_ones(server):
    names = set(server.client().view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert names == {"/generate", "/preview", "/optimize", "/apply_lora", "/draft_questions", "/ask_optimize",
                     "/ask_apply_lora", "/upload_lora", "/apply_uploaded", "/continue_lora", "/score_generate",
                     "/score", "/refine", "/refine_pivot", "/self_improve", "/use_prompt", "/image_to_prompt"}


def test_generate_returns_the_generators_exact_image(server, reference):
    client = server.client()
    image, canvas, note = client.predict(PROMPT, SEED, api_name="/generate")
    assert np.array_equal(pixels(image), reference)
    assert Image.open(canvas["background"]).size == (controls.DISPLAY, controls.DISPLAY)
    assert canvas["layers"] == []
    assert f"seed {SEED}" in note


@pytest.mark.parametrize(("args", "message"), [
    (("", 1), "prompt is empty"),
    (("   ", 1), "prompt is empty"),
    (("x" * 2001, 1), "at most 2000"),
    ((PROMPT, -1), "-1"),
    ((PROMPT, 2**32), "4294967296"),
])
def test_generate_bad_input(server, args, message):
    with fails(message):
        server.client().predict(*args, api_name="/generate")


def test_preview_shows_overlay_and_exact_questions(server, tmp_path):
    client = server.client()
    image, note = client.predict(None, "horizon", editor(tmp_path, horizon_layer(y=0.3)), "", api_name="/preview")
    assert "horizon at y=0.30" in note and "Is the horizon of the scene aligned with the red line?" in note
    view = pixels(image)
    assert view.shape == (controls.DISPLAY, controls.DISPLAY, 3)
    red = (view[..., 0] == 255) & (view[..., 1] == 0) & (view[..., 2] == 0)
    rows = np.nonzero(red.any(axis=1))[0]
    assert abs(rows.mean() / controls.DISPLAY - 0.3) < 0.03  # the line is where it was drawn
    _, note = client.predict(None, "horizon", editor(tmp_path), "", api_name="/preview")
    assert "canvas is blank" in note  # preview explains instead of failing while the user edits
    _, note = client.predict(None, "palette", editor(tmp_path), "", palette_colors="#ff0000 nope",
                             api_name="/preview")
    assert "'nope'" in note


# Long enough (about two seconds) that polling the job sees its progress bar on any machine: at 8 steps the run
# could end between two polls (a flaky failure).
STREAM_STEPS = 40


def test_optimize_streams_and_returns_lora(server, tmp_path, reference):
    client = server.client()
    job = client.submit(**optimize_args(tmp_path, steps=STREAM_STEPS))
    progress = []
    while not job.done():  # the progress bar's data, as the page gets it
        progress += [(p.index, p.length) for p in job.status().progress_data or []]
        time.sleep(0.005)
    final = job.result()
    statuses = [out[STATUS] for out in job.outputs()]
    steps_seen = [int(s.split("step ")[1].split("/")[0]) for s in statuses if s.startswith("Optimizing: step")]
    assert steps_seen[0] == 0 and max(steps_seen) == STREAM_STEPS and steps_seen == sorted(steps_seen)
    assert len(steps_seen) >= 3  # the page is updated while it runs, not only at the end
    assert progress and all(length == STREAM_STEPS for _, length in progress), progress
    assert final[STATUS].startswith(f"Done: {STREAM_STEPS} steps")
    before, after = final[SLIDER]
    assert pixels(before).shape == pixels(after).shape == (controls.DISPLAY, controls.DISPLAY, 3)
    assert "before **0." in final[SCORES] and "after **0." in final[SCORES]
    assert [row[0] for row in final[LOSS]["data"]] == list(range(1, STREAM_STEPS + 1))
    meta = lora_metadata(final[DOWNLOAD])
    # The end-of-run evaluation on unseen seeds: a grid of 4 seeds at scale 0 then scale 1, with each P.
    unseen = meta["unseen_seeds"]
    captions = [item["caption"] for item in final[UNSEEN]]
    assert captions == [f"seed {s}, scale {k}: P {p:.2f}" for k, ps in ((0, unseen["p_scale0"]),
                                                                       (1, unseen["p_scale1"]))
                        for s, p in zip(unseen["seeds"], ps, strict=True)]
    assert f"**{unseen['mean_scale0']:.3f}** at LoRA scale 0 -> **{unseen['mean_scale1']:.3f}**" in final[SCORES]
    assert meta["prompt"] == PROMPT and meta["steps"] == STREAM_STEPS and meta["preset"] == "tiny"
    assert meta["questions"][0][0].startswith("Is the horizon of the scene aligned with the red line?")
    assert "tilt" in meta["overlay"]
    assert_clean(reference, client)
    # the session's LoRA applies to a new prompt and seed; scale 0 is exactly the base model
    other = models()[0].generate("a desert", 5)
    at_zero = client.predict("a desert", 5, 0.0, api_name="/apply_lora")
    assert np.array_equal(pixels(at_zero), np.asarray(other.convert("RGB")))
    at_five = client.predict("a desert", 5, 5.0, api_name="/apply_lora")
    assert not np.array_equal(pixels(at_five), np.asarray(other.convert("RGB")))
    assert_clean(reference, client)


def test_optimize_controls_from_their_inputs(server, tmp_path):
    client = server.client()
    cases = {
        "palette": dict(layers=[], palette_colors="#e63946 #2a9d8f #264653"),
        "line-weight": dict(layers=[], line_px=6),
        "depth": dict(layers=[dots_layer([(0.25, 0.8), (0.7, 0.4)])], depth_relation="closer", depth_contrast=True),
        "composition": dict(layers=[horizon_layer(y=0.6)], questions="Is there a tall tree? | Yes"),
    }
    for control, kwargs in cases.items():
        final = client.predict(**optimize_args(tmp_path, control=control, steps=1, **kwargs))
        meta = lora_metadata(final[DOWNLOAD])
        assert final[STATUS].startswith("Done: 1 steps"), control
        if control == "depth":
            assert [a for _, a in meta["questions"]] == ["Yes", "No"]
            assert "A=(0.25, 0.80) closer" in meta["overlay"]
        if control == "composition":
            assert meta["questions"] == [["Is there a tall tree? Answer with Yes or No.", "Yes"]]
        if control == "palette":
            assert "#e63946 #2a9d8f #264653" in meta["overlay"]
        if control == "line-weight":
            assert meta["overlay"] == "line weight 6 px"


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(prompt=""), "prompt is empty"),
    (dict(layers=[]), "canvas is blank: draw the horizon"),
    (dict(layers=[np.zeros((512, 512, 4), np.uint8)]), "canvas is blank"),
    (dict(control="depth", layers=[dots_layer([(0.5, 0.5)])]), "found 1 painted dot"),
    (dict(control="composition", layers=[]), "canvas is blank"),
    (dict(control="palette", layers=[], palette_colors="#ff0000 #zzzzzz"), "#zzzzzz"),
    (dict(control="palette", layers=[], palette_colors="#ff0000"), "needs 2 to 8"),
    (dict(control="line-weight", layers=[], line_px=50), "50"),
    (dict(control="sky"), "sky"),
    (dict(questions="Is it good? |"), "expected answer after '|' is empty"),
    (dict(steps=0), "0"),
    (dict(steps=501), "501"),
    (dict(seed=-5), "-5"),
])
def test_optimize_bad_input(server, tmp_path, reference, kwargs, message):
    client = server.client()
    args = optimize_args(tmp_path, control=kwargs.pop("control", "horizon"), layers=kwargs.pop("layers", None))
    with fails(message):
        client.predict(**(args | kwargs))
    assert runs.active_runs() == 0


def test_stop_ends_the_worker_within_a_step_and_leaves_the_base(server, tmp_path, reference):
    client = server.client()
    job = client.submit(**optimize_args(tmp_path, steps=400))
    for out in job:
        if out[STATUS].startswith("Optimizing: step") and "step 0/" not in out[STATUS]:
            break
    assert runs.active_runs() == 1
    job.cancel()
    assert wait_for_no_runs() < 5.0
    assert_clean(reference, client)
    with fails("no LoRA in this session"):
        client.predict("a desert", 5, 1.0, api_name="/apply_lora")  # the stopped run left none


def test_stop_keeps_what_was_trained(server, tmp_path, reference):
    """Stop ends the run after its step and keeps the LoRA so far: saved, shown before/after, judged on unseen
    seeds, and marked "stopped at step k"; Stop with nothing running says so."""
    client = server.client()
    assert "Nothing is running" in client.predict(api_name="/stop")
    job = client.submit(**optimize_args(tmp_path, steps=400))
    for out in job:
        if re.match(r"Optimizing: step [1-9]", out[STATUS]):
            break
    assert "Stopping after this step" in client.predict(api_name="/stop")
    final = job.result()
    k = int(re.match(r"Stopped at step (\d+) of 400: the LoRA so far is saved", final[STATUS]).group(1))
    assert 1 <= k < 400
    assert f"stopped at step {k} of 400" in final[SCORES]
    assert lora_metadata(final[DOWNLOAD])["steps"] == k
    assert final[SLIDER] is not None and len(final[UNSEEN]) == 2 * optimize.EVAL_SEEDS
    assert wait_for_no_runs() < 5.0
    assert_clean(reference, client)
    assert client.predict("a desert", 5, 1.0, api_name="/apply_lora")  # the stopped run's LoRA applies


def test_error_during_a_run_leaves_the_base(server, tmp_path, reference, monkeypatch):
    _, vlm = models()
    real, calls = vlm.answer_nll, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated failure in the VLM")
        return real(*args, **kwargs)

    monkeypatch.setattr(vlm, "answer_nll", failing)
    client = server.client()
    with fails("went wrong while optimizing.*simulated failure"):
        client.predict(**optimize_args(tmp_path, steps=10))
    monkeypatch.undo()
    assert wait_for_no_runs() < 5.0
    assert_clean(reference, client)


def test_out_of_memory_gives_a_message_and_the_app_keeps_serving(server, tmp_path, reference, monkeypatch):
    generator, vlm = models()
    client = server.client()

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(generator, "generate", oom)
    with fails("Out of GPU memory while generating the base image.*smaller"):
        client.predict(PROMPT, SEED, api_name="/generate")
    monkeypatch.undo()
    real, calls = vlm.answer_nll, []

    def oom_later(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            oom()
        return real(*args, **kwargs)

    monkeypatch.setattr(vlm, "answer_nll", oom_later)
    with fails("Out of GPU memory while optimizing"):
        client.predict(**optimize_args(tmp_path, steps=5))
    monkeypatch.undo()
    assert wait_for_no_runs() < 5.0
    assert_clean(reference, client)


def test_two_users_at_once_get_their_own_loras(server, tmp_path, reference):
    a, b = server.client(), server.client()
    jobs = {name: c.submit(**optimize_args(tmp_path, prompt=f"a {name} lighthouse", seed=seed, steps=5))
            for name, c, seed in (("red", a, 11), ("blue", b, 12))}
    results = {name: job.result(timeout=120) for name, job in jobs.items()}
    red, blue = results["red"][DOWNLOAD], results["blue"][DOWNLOAD]
    assert Path(red).read_bytes() != Path(blue).read_bytes()
    assert lora_metadata(red)["prompt"] == "a red lighthouse"
    assert lora_metadata(blue)["prompt"] == "a blue lighthouse"
    assert "for seed 11" in results["red"][SCORES] and "for seed 12" in results["blue"][SCORES]
    # each session applies its own LoRA: same prompt, seed and scale, different pictures
    image_a = pixels(a.predict("a harbour", 2, 5.0, api_name="/apply_lora"))
    image_b = pixels(b.predict("a harbour", 2, 5.0, api_name="/apply_lora"))
    assert not np.array_equal(image_a, image_b)
    folders = {p.parent for p in server.root.rglob("*lighthouse.safetensors")}
    assert len(folders) == 2  # one folder per session
    assert_clean(reference, a)


def test_ask_anything_draft_and_optimize(server, reference):
    client = server.client()
    text, note = client.predict("a red apple on a table", 3, api_name="/draft_questions")
    lines = text.splitlines()
    assert len(lines) == 3 and all(line.endswith(" | Yes") for line in lines)
    assert note  # says whether the VLM drafted them (random weights: it did not, templates instead)
    final = client.predict("a red apple on a table", 4, text, 3, api_name="/ask_optimize")
    meta = lora_metadata(final[DOWNLOAD])
    assert len(meta["questions"]) == 3 and meta["overlay"] == ""
    # The keep-prompt tick box adds the prompt's own question (expected Yes) to what is asked.
    guarded = client.predict("a red apple on a table", 4, text, 2, True, api_name="/ask_optimize")
    asked = lora_metadata(guarded[DOWNLOAD])["questions"]
    assert len(asked) == 4 and asked[-1] == ["Does this image show a red apple on a table? Answer with Yes or No.",
                                             "Yes"]
    assert client.predict("a pear", 1, 1.0, api_name="/ask_apply_lora")
    with fails("there are no questions"):
        client.predict("a red apple", 4, "  \n# only a comment", 3, api_name="/ask_optimize")
    with fails("prompt is empty"):
        client.predict("", 3, api_name="/draft_questions")
    with fails("number of questions 0 must be a whole number from 1 to 8"):
        client.predict("an apple", 0, api_name="/draft_questions")
    assert_clean(reference, client)


def test_apply_without_a_lora_and_out_of_range_scale(server):
    client = server.client()
    with fails("no LoRA in this session"):
        client.predict("a desert", 5, 1.0, api_name="/apply_lora")
    with fails("LoRA scale 7.5 must be a number from 0 to 5"):
        client.predict("a desert", 5, 7.5, api_name="/ask_apply_lora")


# ---------- uploads -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def made_lora(tmp_path_factory) -> Path:
    """A real LoRA file from the tiny preset, as the app writes it (one step)."""
    generator, vlm = models()
    path = tmp_path_factory.mktemp("lora") / "beach.safetensors"
    events = list(runs.run(generator, vlm, "a beach", 1, [("Is it a beach? Answer with Yes or No.", "Yes")], steps=1,
                             out_path=path, lock=gpu.MODEL_LOCK))
    assert events[-1].kind == "done"
    return path


def test_upload_and_apply_a_lora(server, made_lora, reference):
    client = server.client()
    meta, info, thumbnail = client.predict(handle_file(str(made_lora)), api_name="/upload_lora")
    assert meta["prompt"] == "a beach" and meta["preset"] == "tiny"
    assert pixels(thumbnail).shape == (112, 112, 3)  # the after image, as the file's ModelSpec thumbnail
    assert "- architecture: flux-1-schnell/lora" in info and "- resolution: 112x112" in info
    assert "beach.safetensors" in info and "Is it a beach?" in info
    image, info = client.predict(handle_file(str(made_lora)), "a forest", 2, 2.0, api_name="/apply_uploaded")
    assert pixels(image).shape == (112, 112, 3)
    assert_clean(reference, client)


def test_upload_refuses_what_is_not_a_lora(server, tmp_path, made_lora):
    client = server.client()
    png = save_png(tmp_path / "picture.png", np.zeros((8, 8, 3), np.uint8))
    garbage = tmp_path / "broken.safetensors"
    garbage.write_bytes(b"this is not a safetensors file at all")
    empty = tmp_path / "empty.safetensors"
    save_file({"weight": torch.zeros(2)}, str(empty))
    tensors, header = {}, {}
    with safe_open(str(made_lora), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = dict(f.metadata())
    other = tmp_path / "flux.safetensors"
    save_file(tensors, str(other), metadata=header | {"dual_process.preset": "flux-schnell"})
    for path, message in [(png, "invalid file type.*safetensors"),
                          (garbage, "broken.safetensors.*not a readable safetensors"),
                          (empty, "holds no LoRA weights"), (other, "made for preset 'flux-schnell'")]:
        with fails(message):
            client.predict(handle_file(str(path)), api_name="/upload_lora")
        with fails(message):
            client.predict(handle_file(str(path)), "a forest", 2, 1.0, api_name="/apply_uploaded")
    with fails("no LoRA file"):
        client.predict(None, "a forest", 2, 1.0, api_name="/apply_uploaded")


def test_full_queue_and_huge_upload(tmp_path, made_lora):
    """A small demo: a queue of one waiting job and a 0.05 MB upload limit."""
    with running(tmp_path, max_queue=1, max_upload_mb=0.05) as small:
        client = small.client()
        with fails(r"MB; at most 0.05 MB"):
            client.predict(handle_file(str(made_lora)), api_name="/upload_lora")
        canvas = editor(tmp_path, horizon_layer())
        clients = [small.client() for _ in range(4)]
        jobs = [c.submit(PROMPT, SEED, "horizon", canvas, "", 300, api_name="/optimize") for c in clients]
        deadline = time.monotonic() + 60
        while sum(job.done() for job in jobs) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # one runs, one waits, the others are turned away
        errors = [str(job.exception()) for job in jobs if job.done() and job.exception()]
        for job in jobs:
            job.cancel()
        assert sum("Queue is full" in e for e in errors) == 2, errors
    assert wait_for_no_runs() < 10


# ---------- Score and Refine prompt tabs ----------------------------------------------------------------


@pytest.fixture(scope="module")
def two_images(server):
    return server.client().predict("a red bicycle", 5, api_name="/score_generate")


def test_score_one_image_gives_every_rubric_and_vqascore(server, two_images):
    a, _ = two_images
    text = server.client().predict("a red bicycle", handle_file(a), None, False, api_name="/score")
    assert "### Image A" in text and "Image B" not in text and "A or B" not in text
    for rubric in ("aesthetic", "alignment", "preference"):
        assert f"**{rubric}**" in text and " / 5 (" in text
    assert "VQAScore" in text and "Does this figure show 'a red bicycle'?" in text


def test_score_two_images_is_order_free(server, two_images):
    a, b = two_images
    client = server.client()
    ab = client.predict("a red bicycle", handle_file(a), handle_file(b), False, api_name="/score")
    ba = client.predict("a red bicycle", handle_file(b), handle_file(a), False, api_name="/score")
    p_ab = float(re.search(r"P\(A is better\) = \*\*([\d.]+)", ab).group(1))
    p_ba = float(re.search(r"P\(A is better\) = \*\*([\d.]+)", ba).group(1))
    assert p_ab == pytest.approx(1 - p_ba, abs=2e-3)
    assert ("orders disagree" in ab) == ("orders disagree" in ba)


def test_score_sampled_mode_shows_no_score_not_zero(server, two_images):
    # The tiny VLM writes noise: the sampled verdicts have no score, and the page says so instead of 0.
    text = server.client().predict("a red bicycle", handle_file(two_images[0]), None, True, api_name="/score")
    assert "no score" in text and "0.00 / 5" not in text
    assert "The judge wrote no readable explanation" in text and "\ufffd" not in text  # not its byte soup


def test_score_bad_input_and_huge_upload(server, tmp_path):
    client = server.client()
    with fails("no image A"):
        client.predict("a red bicycle", None, None, False, api_name="/score")
    with fails("prompt is empty"):
        client.predict(" ", None, None, False, api_name="/score")
    (tmp_path / "notes.png").write_text("this is not an image")
    with fails("Image A .notes.png. is not a readable image"):
        client.predict("a cat", handle_file(str(tmp_path / "notes.png")), None, False, api_name="/score")
    big = tmp_path / "big.png"
    Image.new("RGB", (8000, 5000), "navy").save(big)  # 40 megapixels
    text = client.predict("a cat", handle_file(str(big)), None, False, api_name="/score")
    assert "8000x5000" in text and "downscaled" in text and "### Image A" in text


def test_refine_says_in_one_line_when_the_vlm_writes_nothing_usable(server):
    # The tiny preset's VLM has random weights: it writes byte soup, which is not ranked as "candidates" (the ranking
    # itself is tested on the toy world, whose VLM writes: test_app_toy.py).
    client = server.client()
    for args, api in ((("a cat on a windowsill", 4, 0.9, 0.9, 0), "/refine"),
                      (("a cat on a windowsill", 3, 0.9, 0.9, 2, 3), "/refine_pivot")):
        gallery, table, choice, note = client.predict(*args, api_name=api)
        assert note.startswith("**Nothing to rank:** the loaded VLM wrote nothing usable as a prompt"), note
        assert "\n" not in note and not gallery and not table["data"] and not choice["choices"]


@pytest.mark.parametrize(("args", "message"), [
    (("", 8, 0.9, 0.9, 0), "prompt is empty"),
    (("a cat", 0, 0.9, 0.9, 0), "number of candidates 0 must be a whole number from 1 to 16"),
    (("a cat", 17, 0.9, 0.9, 0), "number of candidates 17 must be a whole number from 1 to 16"),
    (("a cat", 8, 3.0, 0.9, 0), "temperature 3.0 must be a number from 0.05 to 2"),
    (("a cat", 8, 0.9, 0.9, -4), "-4"),
])
def test_refine_bad_input(server, args, message):
    with fails(message):
        server.client().predict(*args, api_name="/refine")


@pytest.mark.parametrize(("args", "message"), [
    (("", 3, 0.9, 0.9, 0, 4), "prompt is empty"),
    (("a cat", 3, 0.9, 0.9, 0, 0), "number of pivot images 0 must be a whole number from 1 to 8"),
    (("a cat", 3, 0.9, 0.9, 0, 9), "number of pivot images 9 must be a whole number from 1 to 8"),
    (("a cat", 17, 0.9, 0.9, 0, 4), "number of candidates 17"),
])
def test_refine_pivot_bad_input(server, args, message):
    with fails(message):
        server.client().predict(*args, api_name="/refine_pivot")


def test_image_to_prompt_recreates_and_scores(server, two_images):
    prompt, image, note = server.client().predict(handle_file(two_images[0]), 2, api_name="/image_to_prompt")
    assert prompt.strip() and Image.open(image).size == (controls.DISPLAY, controls.DISPLAY)
    assert re.search(r"Similarity of the recreated image to yours: \*\*0\.\d+", note)
    with fails("no image"):
        server.client().predict(None, 2, api_name="/image_to_prompt")
