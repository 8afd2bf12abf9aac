"""The app's context and how a tab's functions become Gradio events: the `App` every handler receives, the event
settings, `handler` (binds the app, keeps the API's parameter names), and number inputs whose values reach our
checks as sent."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from pipelines.checks import APP_MAX_UPLOAD_MB, MAX_QUEUE
from pipelines.presets import Preset

GPU = "gpu"  # concurrency id shared by every event that runs the models: one such job at a time
GPU_EVENT = dict(concurrency_id=GPU, concurrency_limit=1)  # every event that runs the models
LIGHT_EVENT = dict(queue=False, api_visibility="private", show_progress="hidden")  # page-only updates


@dataclass
class App:
    """What every handler needs to know about the app it serves (one per `build_demo`)."""

    preset: Preset
    root: Path  # the sessions' folders of LoRA files
    max_upload_bytes: int = APP_MAX_UPLOAD_MB * 2**20
    max_queue: int = MAX_QUEUE

    @property
    def name(self) -> str:
        return self.preset.name

    @property
    def resolution(self) -> int:
        return self.preset.resolution


# ---------- handlers bound to an app -----------------------------------------------------------------------------


def keyed_by_component(call, generator: bool, outputs: dict[str, object] | None):
    """An event function around `call`: results that are dicts keyed by output names (streamed when `generator`)
    are handed to Gradio keyed by the components in `outputs`."""
    def keyed(result):
        return {outputs[k]: v for k, v in result.items()} if outputs and isinstance(result, dict) else result

    if generator:
        def wrapper(*args, **kwargs):
            for item in call(*args, **kwargs):
                yield keyed(item)
    else:
        def wrapper(*args, **kwargs):
            return keyed(call(*args, **kwargs))
    return wrapper


def handler(fn, app: App, outputs: dict[str, object] | None = None):
    """`fn(app, ...)` as a Gradio event function: `app` bound, the rest of the signature kept (it names the API's
    parameters). With `outputs` (name -> component), dict results are keyed by component (`keyed_by_component`)."""
    bound = functools.partial(fn, app)
    wrapper = keyed_by_component(bound, inspect.isgeneratorfunction(fn), outputs)
    functools.update_wrapper(wrapper, fn)
    wrapper.__signature__ = inspect.signature(bound)
    return wrapper


# ---------- inputs whose values reach our checks as sent ----------------------------------------------------------


def as_sent(component):
    """The component's value reaches the handler as sent. Gradio's own preprocessing rounds a number to its
    precision (a seed of 1.5 would silently become 2) and refuses text or out-of-range values (API callers bypass
    the page's bounds) with a message of its own that names no field; the handlers' checks (pipelines/checks.py)
    name the field instead. Set on the instance: a subclass would make Gradio write a .pyi beside this file."""
    component.preprocess = lambda payload: payload
    return component


def NumberBox(*args, **kwargs) -> gr.Number:  # noqa: N802  (reads like the component it makes)
    return as_sent(gr.Number(*args, **kwargs))


def SliderBox(*args, **kwargs) -> gr.Slider:  # noqa: N802
    return as_sent(gr.Slider(*args, **kwargs))
