"""The app's side of issue 13 through gradio_client: several controls in one run, continue from a LoRA (the run just
finished or an upload), stacked LoRAs, the ModelSpec thumbnail, and the MCP server's tool list."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from app_fixtures import PROMPT, SEED, editor, free_port, horizon_layer, pixels, server_fixture  # noqa: F401
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from overlays import horizon, palette
from pipelines import lora, modelspec
from pipelines.lora import lora_metadata
from pipelines.presets import get_preset
from studio import MCP_TOOLS, gpu

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
STATUS, DOWNLOAD = 0, 6  # outputs of /optimize, in order


def fails(message: str):
    return pytest.raises(AppError, match="(?i)" + message)


def run(client, tmp_path, **extra):
    if "canvas" not in extra:  # built only when not given: `editor` writes its layers to fixed file names
        extra["canvas"] = editor(tmp_path, horizon_layer(y=0.3))
    return client.predict(**(dict(prompt=PROMPT, seed=SEED, control="horizon", questions="", steps=2,
                                  api_name="/optimize") | extra))


def test_horizon_drawn_and_a_palette_in_one_run(server, tmp_path):
    client = server.client()
    final = run(client, tmp_path, combine=["palette"], palette_colors="#e63946 #2a9d8f #264653")
    assert final[STATUS].startswith("Done: 2 steps"), final[STATUS]
    meta = lora_metadata(final[DOWNLOAD])
    assert [q for q, _ in meta["questions"]] == [palette.QUESTION, horizon.QUESTION]
    assert meta["controls"][0].startswith("palette #e63946 #2a9d8f #264653") and meta["controls"][1].startswith(
        "horizon at y=0.3")
    image, note = client.predict(None, "horizon", editor(tmp_path, horizon_layer(y=0.3)), "", api_name="/preview",
                                 combine=["palette"], palette_colors="#e63946 #2a9d8f #264653")
    assert palette.QUESTION in note and horizon.QUESTION in note
    shown = pixels(image)
    assert (shown[-20:, :, 0] > 200).any() and (shown[-20:, :, 1] > 120).any()  # the strip is at the bottom


def test_a_clash_and_a_combined_control_without_its_settings_are_refused(server, tmp_path):
    client = server.client()
    with fails("the palette and horizon overlays overlap"):
        run(client, tmp_path, canvas=editor(tmp_path, horizon_layer(y=0.97, tilt_px=0)), combine=["palette"],
            palette_colors="#e63946 #2a9d8f")
    with fails("combined control depth needs Point A and Point B in its settings"):
        run(client, tmp_path, combine=["depth"])


def test_drawn_controls_combine_through_their_settings(server, tmp_path):
    """A drawn horizon with depth points typed in; a palette Control with a horizon height typed in."""
    client = server.client()
    final = run(client, tmp_path, combine=["depth"], point_a="0.2, 0.8", point_b="0.75, 0.55")
    assert final[STATUS].startswith("Done: 2 steps"), final[STATUS]
    meta = lora_metadata(final[DOWNLOAD])
    assert meta["controls"][0].startswith("horizon at y=0.3") and meta["controls"][1].startswith(
        "depth: A=(0.20, 0.80) foreground vs B=(0.75, 0.55)"), meta["controls"]
    image, note = client.predict(None, "palette", None, "", api_name="/preview", combine=["horizon"],
                                 palette_colors="#e63946 #2a9d8f", horizon_y=0.4, horizon_tilt=0)
    assert palette.QUESTION in note and horizon.QUESTION in note and "horizon at y=0.40" in note, note
    red_rows = np.flatnonzero((pixels(image)[..., 0] > 200).mean(axis=1) > 0.9)
    assert any(abs(r / pixels(image).shape[0] - 0.4) < 0.02 for r in red_rows), red_rows


def test_continue_from_the_run_just_finished(server, tmp_path):
    client = server.client()
    with fails("there is no LoRA to continue from yet"):
        run(client, tmp_path, continue_from=True)
    first = run(client, tmp_path, steps=2)
    second = run(client, tmp_path, steps=3, continue_from=True)
    assert "continuing" in second[5] and "(5 in all)" in second[5]
    parent, child = lora_metadata(first[DOWNLOAD]), lora_metadata(second[DOWNLOAD])
    assert (child["steps"], child["total_steps"]) == (3, 5)
    assert child["parent_sha256"] == modelspec.read(lora.read_lora(first[DOWNLOAD])[1])["hash_sha256"]
    assert parent["total_steps"] == 2


def test_continue_from_an_upload_and_stack_two_loras(server, tmp_path):
    client = server.client()
    a = run(client, tmp_path, steps=1)[DOWNLOAD]
    b = run(client, tmp_path, steps=1, canvas=editor(tmp_path, horizon_layer(y=0.6)))[DOWNLOAD]
    info = client.predict(handle_file(a), api_name="/continue_lora")
    assert "continues from" in info and "1 steps behind it" in info
    final = run(client, tmp_path, steps=2, continue_from=True)
    assert lora_metadata(final[DOWNLOAD])["total_steps"] == 3
    generator, _ = gpu.models(get_preset("tiny"))
    one, _ = client.predict(handle_file(a), "a forest", 2, 1.0, api_name="/apply_uploaded")
    zero, _ = client.predict(handle_file(a), "a forest", 2, 1.0, [handle_file(b)], "0", api_name="/apply_uploaded")
    both, note = client.predict(handle_file(a), "a forest", 2, 1.0, [handle_file(b)], "0.7",
                                api_name="/apply_uploaded")
    assert np.array_equal(pixels(one), pixels(zero))  # the second at scale 0 adds nothing
    assert not np.array_equal(pixels(one), pixels(both)) and "at scale 0.7" in note
    expected = generator.generate("a forest", 2, lora_path=a, loras=[(b, 0.7)])
    assert np.array_equal(pixels(both), np.asarray(expected.convert("RGB")))
    assert not getattr(generator.transformer, "peft_config", None)
    with fails("2 stacked LoRA scales for 1 stacked LoRA files"):
        client.predict(handle_file(a), "a forest", 2, 1.0, [handle_file(b)], "0.7 0.5", api_name="/apply_uploaded")
    with fails("stacked LoRA scales 'x' must be numbers"):
        client.predict(handle_file(a), "a forest", 2, 1.0, [handle_file(b)], "x", api_name="/apply_uploaded")


async def call_generate(url: str) -> tuple:
    """What an agent gets from the generate tool over MCP's streamable HTTP: a good call, then an empty prompt."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(url) as (read, write, _), ClientSession(read, write) as session:
        await session.initialize()
        made = await session.call_tool("generate_base", {"prompt": "a beach", "seed": 3})
        refused = await session.call_tool("generate_base", {"prompt": " ", "seed": 3})
        return made, refused


def test_mcp_serves_generate_optimize_and_score_as_tools(tmp_path):
    port = free_port()
    env = os.environ | {"MCP": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "app.py", "--preset", "tiny", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/gradio_api/mcp/schema"
        deadline, tools = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    tools = {t["meta"]["endpoint_name"]: t for t in json.loads(response.read())}
                break
            except OSError:
                time.sleep(0.5)
        assert tools is not None, proc.stdout.read() if proc.poll() is not None else "no schema"
        made, refused = asyncio.run(call_generate(f"http://127.0.0.1:{port}/gradio_api/mcp/"))
    finally:
        proc.terminate()
        proc.wait(20)
    assert set(tools) == set(MCP_TOOLS), sorted(tools)  # no page plumbing offered to an agent
    assert {"generate", "optimize", "score"} <= set(tools)
    for name in MCP_TOOLS:
        assert len(tools[name]["description"]) > 80, (name, tools[name]["description"])
    assert "LoRA" in tools["optimize"]["description"]
    props = tools["optimize"]["inputSchema"]["properties"]
    assert {"prompt", "seed", "control", "steps", "combine"} <= set(props)
    assert "e.g." in props["prompt"]["description"]
    assert not made.isError and "image.png" in made.content[0].text, made
    assert refused.isError and [c.text for c in refused.content] == ["The prompt is empty"], refused
