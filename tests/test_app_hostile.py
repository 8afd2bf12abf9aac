"""Hostile and mistaken input through every kind of app endpoint (gradio_client, bypassing the page's bounds):
one short gr.Error line naming the field as the page labels it, and the app serving the next request unchanged.

Families (cases): uploads (12), numbers (16), text (5), LoRA files (3). The shared pipeline is checked
bit-identical at the end.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from app_fixtures import PROMPT, SEED, editor, horizon_layer, pixels, server_fixture  # noqa: F401
from bad_files import png_claiming
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from pipelines import optimize
from pipelines.optimize import save_result
from pipelines.presets import get_preset
from studio import gpu

pytestmark = pytest.mark.slow
QA = [("Is it a beach? Answer with Yes or No.", "Yes")]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "notes.png").write_text("this is not an image")
    (tmp / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>')
    (tmp / "bomb.png").write_bytes(png_claiming(40_000, 40_000))
    cut = tmp / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(cut)
    cut.write_bytes(cut.read_bytes()[:200])
    return tmp


def refused(client, message: str, *args, api_name: str, **kwargs):
    with pytest.raises(AppError) as info:
        client.predict(*args, api_name=api_name, **kwargs)
    text = str(info.value)
    assert re.search(message, text, re.IGNORECASE), text
    assert "\n" not in text.strip() and "Traceback" not in text and "preprocess" not in text, text


UPLOADS = [("notes.png", "not a readable image"), ("drawing.svg", "not a readable image"),
           ("bomb.png", "at most 8192 pixels a side"), ("cut.png", "not a readable image")]


@pytest.mark.parametrize("name,message", UPLOADS)
def test_bad_uploads_get_our_message_naming_the_field(server, bad_files, name, message):
    client = server.client()
    file = handle_file(str(bad_files / name))
    refused(client, f"Image A '{name}' is {message}|Image A '{name}'.*{message}", "a cat", file, None, False,
            api_name="/score")
    refused(client, f"Your image '{name}'.*{message}", file, 1, api_name="/image_to_prompt")
    refused(client, f"Reference under your annotations '{name}'.*{message}", prompt=PROMPT, seed=SEED,
            control="composition", canvas=editor(bad_files), questions="", steps=2, composition_reference=file,
            api_name="/optimize")


@pytest.mark.parametrize("name,message", [("notes.png", "Canvas: not a readable image"),
                                          ("bomb.png", "Canvas: an image over 40 MP; at most 8192 pixels a side"),
                                          ("drawing.svg", "Canvas: not a readable image")])
def test_a_canvas_layer_that_is_not_an_image_is_named(server, bad_files, name, message):
    canvas = {"background": None, "layers": [handle_file(str(bad_files / name))], "composite": None}
    refused(server.client(), message, prompt=PROMPT, seed=SEED, control="horizon", canvas=canvas, questions="",
            steps=2, api_name="/optimize")


def raw_call(server, api: str, data: list) -> str:
    """A call over Gradio's HTTP API with exactly these values (no client to fill them in): the error line, or
    '' when it ran."""
    import json

    import httpx

    event = httpx.post(f"{server.url}gradio_api/call/{api}", json={"data": data}, timeout=30).json()["event_id"]
    stream = httpx.get(f"{server.url}gradio_api/call/{api}/{event}", timeout=60).text
    if "event: error" not in stream:
        return ""
    return json.loads(stream.split("event: error\ndata: ", 1)[1].split("\n", 1)[0])["error"]


@pytest.mark.parametrize("api,data,message", [
    ("generate", ["a cat"], r"^/generate takes 2 values \(Prompt, Seed\); 1 was sent$"),
    ("generate", ["a cat", 1, 2, 3], r"^/generate takes 2 values \(Prompt, Seed\); 4 were sent$"),
    ("score", [], r"^/score takes 4 values \(What the images should show, Image A, Image B, Sampled verdicts\); 0 "
                  r"were sent$"),
    ("optimize", [PROMPT, SEED], r"^/optimize takes \d+ values \(Prompt, Seed, Control, Canvas, .*; 2 were sent$"),
    ("generate", ["a cat", {"not": "a number"}], r"^Seed \{'not': 'a number'\} must be a whole number"),
    ("optimize", [PROMPT, SEED, "horizon", "a canvas as text", *[None] * 19], r"^Canvas is not a value of the right "
                                                                            r"kind"),
])
def test_a_call_with_the_wrong_values_is_refused_in_one_line(server, api, data, message):
    client = server.client()
    before = pixels(client.predict(PROMPT, SEED, api_name="/generate")[0])
    text = raw_call(server, api, data)
    assert re.search(message, text) and "\n" not in text and "object at 0x" not in text, text
    assert np.array_equal(pixels(client.predict(PROMPT, SEED, api_name="/generate")[0]), before)


NUMBERS = [
    ((PROMPT, "seven"), "/generate", "Seed 'seven' must be a whole number"),
    ((PROMPT, 1.5), "/generate", "Seed 1.5 must be a whole number"),
    ((PROMPT, -1), "/generate", "Seed -1"),
    ((PROMPT, 2**32), "/generate", "Seed 4294967296"),
    (("a cat", 0, 0.9, 0.9, 0), "/refine", "number of candidates 0"),
    (("a cat", "many", 0.9, 0.9, 0), "/refine", "number of candidates 'many'"),
    (("a cat", 2, 9.0, 0.9, 0), "/refine", "temperature 9.0 must be a number from 0.05 to 2"),
    (("a cat", 2, 0.9, -1, 0), "/refine", "top-p -1"),
    (("a cat", 2, 0.9, 0.9, 0, "four"), "/refine_pivot", "number of pivot images 'four'"),
    (("a cat", 2, 0.9, 0.9, 0, 2.5), "/refine_pivot", "number of pivot images 2.5"),
    (("a cat", 99), "/draft_questions", "number of questions 99"),
    (("a cat", 2.5), "/draft_questions", "number of questions 2.5"),
    (("a red bicycle", "x"), "/score_generate", "Seed 'x'"),
]


@pytest.mark.parametrize("args,api,message", NUMBERS)
def test_numbers_through_the_api_are_named(server, args, api, message):
    refused(server.client(), message, *args, api_name=api)


@pytest.mark.parametrize("steps,message", [("many", "steps 'many'"), (2.5, "steps 2.5"), (10**9, "steps 1000000000")])
def test_optimize_steps_bypassing_the_slider(server, tmp_path, steps, message):
    refused(server.client(), message, PROMPT, SEED, "horizon", editor(tmp_path, horizon_layer()), "", steps,
            api_name="/optimize")


TEXT = [
    (("\x00\x07\t", 1), "/generate", "prompt is empty"),
    (("\u200b\u200b", 1), "/generate", "prompt is empty"),
    (("a cat", 1, "   \n\t\n", 2), "/ask_optimize", "there are no questions"),
    (("a cat", 1, "Is it a cat? | " + "yes " * 40, 2), "/ask_optimize", "expected answer has 159 characters; at "
                                                                      "most 100"),
    (("a cat", 1, "Q? | Yes\n" * 9, 2), "/ask_optimize", "9 questions given; at most 8"),
]


@pytest.mark.parametrize("args,api,message", TEXT)
def test_text_that_is_empty_or_too_long_is_named(server, args, api, message):
    refused(server.client(), message, *args, api_name=api)


def test_loras_for_another_model_are_refused_and_the_app_is_unchanged(server, tiny_sana_models, tmp_path):
    client = server.client()
    before = pixels(client.predict(PROMPT, SEED, api_name="/generate")[0])
    generator, vlm = tiny_sana_models
    result = optimize.optimize(generator, vlm, "a desert", QA, steps=1, progress=False, eval_seeds=0)
    sana = tmp_path / "sana.safetensors"
    save_result(result, sana, generator, "a desert", QA)
    refused(client, "LoRA file 'sana.safetensors' was made for preset 'tiny-sana'", handle_file(str(sana)),
            api_name="/upload_lora")
    # Without a header to go by, the shapes refuse it (never a load_state_dict dump).
    from safetensors.torch import save_file

    from pipelines import lora

    tensors, header = lora.read_lora(sana)
    del header["dual_process.preset"]
    anonymous = tmp_path / "anonymous.safetensors"
    save_file(tensors, str(anonymous), metadata=header)
    refused(client, "LoRA file 'anonymous.safetensors' (adapts|does not fit)", handle_file(str(anonymous)),
            api_name="/upload_lora")
    refused(client, "LoRA file 'anonymous.safetensors'", handle_file(str(anonymous)), "a cat", 1, 1.0,
            api_name="/apply_uploaded")
    assert not getattr(gpu.models(get_preset("tiny"))[0].transformer, "peft_config", None)
    assert np.array_equal(pixels(client.predict(PROMPT, SEED, api_name="/generate")[0]), before)


def rss_mb() -> float:
    """This process's resident memory (Linux)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


USERS_SCRIPT = """
import json, sys, time
sys.path.insert(0, sys.argv[3])
from app_fixtures import editor, horizon_layer
from gradio_client import Client
from pathlib import Path
url, tmp = sys.argv[1], Path(sys.argv[2])
clients = [Client(url, verbose=False) for _ in range(20)]
canvas = editor(tmp, horizon_layer())
start = time.monotonic()
jobs = [c.submit(prompt=f"a lighthouse number {i}", seed=100 + i, control="horizon", canvas=canvas, questions="",
                 steps=20, api_name="/optimize") for i, c in enumerate(clients)]
ended = {}
while len(ended) < len(jobs) and time.monotonic() - start < 240:
    for i, job in enumerate(jobs):
        if i not in ended and job.done():
            ended[i] = time.monotonic() - start
    time.sleep(0.05)
out = {}
for i, job in enumerate(jobs):
    try:
        final = job.result(timeout=5)
        out[i] = {"lora": final[6], "before": final[4][0], "s": ended.get(i)}
    except Exception as exc:
        out[i] = {"error": str(exc), "s": ended.get(i)}
for c in clients:
    c.close()
print(json.dumps(out))
"""


def test_twenty_users_against_a_queue_of_four(tmp_path):
    """Bounded in time, not a soak: 20 users (another process) submit an optimization at once to an app that lets
    4 wait. Those beyond the line are told at once; the others get their own result; a second wave of 20 leaves the
    server's memory within 8 % of where the first left it, or a later wave within 4 % (nothing is kept per user)."""
    import ctypes
    import gc
    import json
    import subprocess
    import sys
    from pathlib import Path

    from app_fixtures import running
    from PIL import Image as PILImage

    from pipelines.lora import lora_metadata

    def trimmed_rss() -> float:
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the system, so RSS measures what is held
        return rss_mb()

    def wave() -> dict[int, dict]:
        done = subprocess.run([sys.executable, "-c", USERS_SCRIPT, server.url, str(tmp_path), tests_dir],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}

    tests_dir = str(Path(__file__).resolve().parent)
    with running(tmp_path, max_queue=4) as server:
        # The first wave grows the server once (connection threads, caches: +7 % here, +13 % on CI); a leak is what
        # a second, identical wave adds on top of that.
        wave()
        start_mb = trimmed_rss()
        users = wave()
        end_mb = trimmed_rss()  # before this test's own generations below
        busy = [i for i, u in users.items() if "error" in u]
        served = [i for i, u in users.items() if "error" not in u]
        assert all("Queue is full" in users[i]["error"] for i in busy), [users[i]["error"] for i in busy]
        assert all(users[i]["s"] is not None and users[i]["s"] < 5 for i in busy), users  # told at once
        assert len(busy) >= 10 and len(served) >= 5, (busy, served)
        generator = gpu.models(get_preset("tiny"))[0]
        for i in served:  # each user gets their own LoRA and their own picture, never another's
            assert lora_metadata(users[i]["lora"])["prompt"] == f"a lighthouse number {i}"
            own = np.asarray(generator.generate(f"a lighthouse number {i}", 100 + i).convert("RGB"))
            shown = PILImage.open(users[i]["before"]).convert("RGB").resize(own.shape[1::-1], PILImage.NEAREST)
            assert np.array_equal(np.asarray(shown), own), f"user {i} saw another picture"
        # A second wave added 0-5 % alone, 6.6 % and once 10.3 % late in a full suite; on CI (2026-12-07) a third
        # added 5.0 % more after 9.8 %, while six waves alone here went 656, 665, 694, 668, 680, 678 MB: a
        # long-lived process's allocator settling, by steps. A leak grows again with every wave; settling stops:
        # past 8 %, one of up to three more waves must add less than 4 %.
        seen = [start_mb, end_mb]
        while seen[-1] > seen[-2] * (1.08 if len(seen) == 2 else 1.04) and len(seen) < 5:
            wave()
            seen.append(trimmed_rss())
        assert seen[-1] <= seen[-2] * (1.08 if len(seen) == 2 else 1.04), seen
    assert not getattr(gpu.models(get_preset("tiny"))[0].transformer, "peft_config", None)


def test_a_nan_loss_mid_run_says_so_and_the_app_serves_on(server, tmp_path, monkeypatch):
    client = server.client()
    before = pixels(client.predict(PROMPT, SEED, api_name="/generate")[0])
    vlm = gpu.models(get_preset("tiny"))[1]
    real, calls = vlm.answer_nll, {"n": 0}

    def flaky(pixels_, qa):
        calls["n"] += 1
        return real(pixels_, qa) * (float("nan") if calls["n"] == 2 else 1.0)

    monkeypatch.setattr(vlm, "answer_nll", flaky)
    refused(client, r"the loss became nan at step \d+: the run was stopped and no LoRA was saved", PROMPT, SEED,
            "horizon", editor(tmp_path, horizon_layer()), "", 5, api_name="/optimize")
    monkeypatch.undo()
    assert not getattr(gpu.models(get_preset("tiny"))[0].transformer, "peft_config", None)
    assert np.array_equal(pixels(client.predict(PROMPT, SEED, api_name="/generate")[0]), before)
    assert not list(server.root.rglob("*.safetensors.tmp")) and not list(server.root.rglob(".*.tmp"))
