"""What a user reads when something fails: our exceptions and the ones Gradio raises before our handlers run, each
as one line naming the field or the action."""

from __future__ import annotations

import functools
import gc
import inspect
import logging
import traceback

import gradio as gr
import torch
from PIL import Image, UnidentifiedImageError

from pipelines.checks import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE

log = logging.getLogger("studio")
OOM_MESSAGE = ("Out of GPU memory while {what}. Try a smaller resolution or a smaller preset (e.g. PRESET=sana, or "
               "tiny); your inputs are kept and the app keeps serving.")

# ---------- errors: what the user reads --------------------------------------------------------------------------


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError)
                                                        and "out of memory" in str(exc).lower())


def user_error(exc: Exception, what: str) -> gr.Error:
    """The one-line message a user reads for an exception raised while `what`."""
    if isinstance(exc, gr.Error):
        return exc
    if is_oom(exc):
        # The traceback's frames still hold the failed step's tensors: drop them before freeing the cache.
        traceback.clear_frames(exc.__traceback__)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning("out of memory while %s", what)
        return gr.Error(OOM_MESSAGE.format(what=what), print_exception=False)
    if isinstance(exc, (ValueError, FileNotFoundError)):
        text = str(exc).strip("'\"")
        return gr.Error(text[:1].upper() + text[1:], print_exception=False)
    log.exception("failed while %s", what)
    return gr.Error(f"Something went wrong while {what} ({type(exc).__name__}: {exc}). The app keeps serving.",
                    print_exception=False)


def user_errors(what: str):
    """Turn bad input (ValueError), out-of-memory and unexpected failures into a gr.Error message."""

    def decorate(fn):
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as exc:
                    raise user_error(exc, what) from None
        else:
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:
                    raise user_error(exc, what) from None
        return wrapper

    return decorate


# ---------- what Gradio itself refuses, in our words --------------------------------------------------------------


def field_name(block) -> str:
    """How the page names an input: its label up to any explanation, else its elem_id, else its kind."""
    label = (getattr(block, "label", None) or "").split(" (")[0].split(":")[0].strip()
    return label or getattr(block, "elem_id", None) or block.get_block_name()


def unreadable(exc: BaseException) -> str:
    """Why a value could not be read, in a few words (never the payload or a traceback)."""
    if isinstance(exc, Image.DecompressionBombError):
        return f"an image over {MAX_IMAGE_PIXELS / 1e6:.0f} MP; at most {MAX_IMAGE_SIDE} pixels a side"
    if isinstance(exc, UnidentifiedImageError):
        return "not a readable image"
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"could not be read ({first[:160]})"


def endpoint(block_fn) -> str:
    return f"/{block_fn.api_name}" if getattr(block_fn, "api_name", None) else f"the event {block_fn.name!r}"


def guard_api(demo: gr.Blocks) -> None:
    """Calls that Gradio refuses before our handlers run get one line naming the field, not its internal
    multi-line message: a value its component cannot read (a canvas layer that is not an image, a decompression
    bomb), a value of the wrong kind, and a call with the wrong number of values (Gradio refuses too few with a
    dump of its objects and silently drops extras; we refuse both). Set on the instance, as `as_sent` is."""
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # PIL refuses twice this from the header, before decoding
    preprocess_data = demo.preprocess_data

    def validate_inputs(block_fn, inputs: list) -> None:
        if len(inputs) != len(block_fn.inputs):
            names = ", ".join(field_name(b) for b in block_fn.inputs if not getattr(b, "stateful", False))
            raise gr.Error(f"{endpoint(block_fn)} takes {len(block_fn.inputs)} values ({names}); "
                           f"{len(inputs)} {'was' if len(inputs) == 1 else 'were'} sent", print_exception=False)

    for block in demo.blocks.values():
        if isinstance(block, gr.components.Component):
            block.preprocess = reading_errors_named(block, block.preprocess)

    async def checked_preprocess_data(block_fn, inputs, state, explicit_call=False):
        try:
            return await preprocess_data(block_fn, inputs, state, explicit_call)
        except gr.Error:
            raise
        except Exception as exc:  # e.g. the component's data model refused the value's shape
            blamed = next((b for b, v in zip(block_fn.inputs, inputs, strict=False)
                           if v is not None and getattr(b, "data_model", None) and not fits(b, v)), None)
            field = field_name(blamed) if blamed is not None else f"a value sent to {endpoint(block_fn)}"
            raise gr.Error(f"{field} is not a value of the right kind ({type(exc).__name__})",
                           print_exception=False) from None

    demo.validate_inputs = validate_inputs
    demo.preprocess_data = checked_preprocess_data


def reading_errors_named(block, preprocess):
    """The component's preprocess, its failures as one gr.Error line naming the field (Gradio passes gr.Error on
    unchanged)."""
    def read(payload):
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception as exc:
            raise gr.Error(f"{field_name(block)}: {unreadable(exc)}", print_exception=False) from None

    return read


def fits(block, value) -> bool:
    try:
        block.data_model.model_validate(value, context={"validate_meta": True})
    except Exception:
        return False
    return True
