"""The page: its header, the five tabs, and the links between tabs. `build_demo` is what `app.py` serves."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

import overlays
from pipelines.checks import APP_MAX_UPLOAD_MB, MAX_QUEUE, check_prompt, on_zerogpu
from pipelines.presets import Preset, get_preset

from .context import App
from .gpu import models, use_slice
from .messages import guard_api, user_errors
from .sessions import drop_session
from .tabs.ask_anything import AskAnythingTab
from .tabs.refine_prompt import RefinePromptTab, chosen_prompt
from .tabs.score import ScoreTab
from .tabs.use_a_lora import UseALoraTab
from .tabs.visual_prompts import VisualPromptsTab


def choose_preset(requested: str | None, env: str | None, has_gpu: bool,
                  gpu_default: str = "flux-schnell", offline_default: str = "toy") -> tuple[str, str | None]:
    """(preset to serve, note for the user). Without a GPU only the offline presets run (toy world, tiny)."""
    name = requested or env or (gpu_default if has_gpu else offline_default)
    preset = get_preset(name)
    if not has_gpu and not preset.offline:
        return offline_default, f"No GPU found: serving the offline `{offline_default}` preset instead of `{name}`."
    return name, None


def header(preset: Preset, max_queue: int, note: str | None) -> str:
    parts = ["# Dual-process studio\nDraw a visual prompt or ask questions: a vision-language model (VLM) judges "
             "the generator's images, and a LoRA of the generator learns to make it answer as you expect (Luo et al. "
             "2025, \"Dual-Process Image Generation\").", f"Preset `{preset.name}`: {preset.description}."]
    if preset.known_scenes:
        untrained = ", ".join(c for c in overlays.CONTROLS if preset.control_note(c))
        parts.append(
            f"**The toy world (preset `{preset.name}`, on the CPU).** A tiny generator trained here on synthetic "
            f"landscapes: {len(preset.known_scenes)} scenes ({', '.join(preset.known_scenes)}) and the words a prompt "
            "may add (noon, golden hour, sunset, night; clear or cloudy sky; low or high horizon; the sun or the "
            "moon; a lone tree on the left or right; vivid or muted colours; birds in the sky). A tiny VLM trained "
            "here answers the visual prompts' questions, scores, rewrites prompts and describes images in the same "
            f"words. Small enough to train in an hour and to show the method on a real picture offline; the other "
            f"controls ({untrained}) are untrained there and say so. Start the app on a GPU with "
            "`--preset flux-schnell` for real models.")
    elif preset.random_weights:
        parts.append(f"**Offline demo: preset `{preset.name}` has random weights, so its images are noise.** "
                     "Every code path is the real one; start the app on a GPU with `--preset flux-schnell` for "
                     "real pictures.")
    if note:
        parts.append(f"_{note}_")
    parts.append(f"One job runs at a time and up to {max_queue} wait in line; when the line is full the page says "
                 "the app is busy: try again a little later.")
    return "\n\n".join(parts)


@user_errors("sending the prompt")
def send_prompt(text: str) -> tuple[str, gr.Tabs]:
    return check_prompt(text), gr.Tabs(selected="visual")


def use_candidate(choice: str | None) -> tuple[str, gr.Tabs]:
    return chosen_prompt(choice), gr.Tabs(selected="visual")


# What an agent gets when the app serves MCP: the endpoints that do a whole job from plain arguments. The others
# are page plumbing (previews, tab links) or read the browser session, which an MCP call does not carry.
MCP_TOOLS = ("generate", "optimize", "score", "apply_uploaded", "refine", "refine_pivot", "image_to_prompt")


def expose_as_tools(demo: gr.Blocks, names: tuple[str, ...] = MCP_TOOLS) -> None:
    """Keep only `names` as MCP tools (and in the API page): the other public endpoints become "undocumented",
    still callable by gradio_client but not offered to an agent. Call before `launch(mcp_server=True)`."""
    endpoints = {fn.api_name for fn in demo.fns.values()}
    if missing := set(names) - endpoints:
        raise ValueError(f"MCP tools {sorted(missing)} are not endpoints of the app")
    for fn in demo.fns.values():
        if fn.api_visibility == "public" and fn.api_name not in names:
            fn.api_visibility = "undocumented"


def build_demo(preset_name: str = "toy", *, max_queue: int = MAX_QUEUE, max_upload_mb: float = APP_MAX_UPLOAD_MB,
               output_dir: str | Path | None = None, note: str | None = None) -> gr.Blocks:
    """The whole app for one preset (its models load here, once per process). Launch it yourself."""
    preset = get_preset(preset_name)
    models(preset)
    size, why = use_slice(preset)
    if on_zerogpu():  # the slice the preset's memory plan needs, said where the person sees it and in the log
        print(f"ZeroGPU slice: {size} ({why})")
        note = " ".join(filter(None, [note, f"ZeroGPU slice: **{size}** ({why})."]))
    root = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="dual-process-studio-"))
    root.mkdir(parents=True, exist_ok=True)
    app = App(preset, root, int(max_upload_mb * 2**20), max_queue)
    with gr.Blocks(title="Dual-process studio") as demo:
        gr.Markdown(header(preset, max_queue, note), elem_id="header")
        session = gr.State(None, delete_callback=drop_session)
        with gr.Tabs() as tabs:
            visual = VisualPromptsTab(app, session)
            AskAnythingTab(app, session)
            use = UseALoraTab(app, session)
            ScoreTab(app)
            refine = RefinePromptTab(app, session)
        # Links between tabs: a refined or image-written prompt goes to Visual prompts.
        refine.use.click(use_candidate, refine.choice, [visual.prompt, tabs], api_name="use_prompt", queue=False)
        refine.i2p_use.click(send_prompt, refine.i2p_prompt, [visual.prompt, tabs], api_visibility="private",
                             queue=False)
        use.continued.success(lambda: (True, gr.Tabs(selected="visual")), None,
                              [visual.results.continue_from, tabs], api_visibility="private", queue=False)
        demo.load(**visual.landing, queue=False, api_visibility="private", show_progress="hidden")
    guard_api(demo)
    demo.queue(max_size=max_queue, default_concurrency_limit=1)
    demo.studio_root = root  # where the sessions' LoRA files go
    return demo
