"""The streamed optimization run behind an Optimize button: a worker thread, events, the GPU time request."""

from __future__ import annotations

import os
import queue
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

import overlays
from pipelines import lora
from pipelines.generator import Conditioning, Generator
from pipelines.optimize import Evaluation, Result, Step, optimize, save_result, score_image
from pipelines.vlm import QA, VLM

RUN_THREAD_PREFIX = "studio-optimize-"


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def optimize_stream(generator: Generator, vlm: VLM, prompt: str | Conditioning, qa_pairs: Sequence[QA], *,
                    lock: threading.Lock, join_timeout: float = 600.0, **kwargs) -> Iterator[Step | Result]:
    """Run `optimize` in a worker thread and yield every Step, then the Result.

    The worker holds `lock` (the shared models) for the whole run. Closing this generator (a UI's Stop,
    a cancelled request) sets the stop event in `finally`: the worker stops before its next step, the
    engine removes the LoRA, and this waits for that. An exception in the worker is re-raised here.
    """
    stop = threading.Event()
    events: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            with lock:
                result = optimize(generator, vlm, prompt, list(qa_pairs), callback=events.put, should_stop=stop.is_set,
                                  progress=False, **kwargs)
            events.put(result)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            events.put(_Failure(exc))

    worker = threading.Thread(target=work, name=RUN_THREAD_PREFIX + uuid.uuid4().hex[:8], daemon=True)
    worker.start()
    try:
        while True:
            item = events.get()
            if isinstance(item, _Failure):
                raise item.exc
            yield item
            if isinstance(item, Result):
                return
    finally:
        stop.set()
        worker.join(join_timeout)


def active_runs() -> int:
    """Optimization workers still alive in this process (0 once every run has stopped or finished)."""
    return sum(t.name.startswith(RUN_THREAD_PREFIX) and t.is_alive() for t in threading.enumerate())


@dataclass
class RunEvent:
    kind: str  # "start" (base image judged), "step" (one optimization step), "done" (LoRA saved, after judged)
    before: Image.Image | None = None
    p_before: float | None = None
    step: Step | None = None
    after: Image.Image | None = None
    p_after: float | None = None
    path: str | None = None
    history: list[Step] = field(default_factory=list)
    unseen: Evaluation | None = None  # the LoRA judged on unseen seeds at scale 0 and 1
    total_steps: int = 0  # this run's steps and those of the LoRA it continued
    parent: str | None = None  # the LoRA file it continued from
    stopped_at: int | None = None  # the user pressed Stop after this many steps (0: nothing trained, no file)


def preview_every(steps: int) -> int:
    """Show the judged image about ten times per run."""
    return max(1, round(steps / 10))


def run(generator: Generator, vlm: VLM, prompt: str, seed: int, qa_pairs: Sequence[QA], *, steps: int,
        out_path: str | Path, lock: threading.Lock, overlay: Image.Image | np.ndarray | None = None,
        overlay_description: str = "", target_p: float | None = None, controls: Sequence[str] | None = None,
        init_path: str | Path | None = None, stop_file: str | Path | None = None,
        steering: dict | None = None) -> Iterator[RunEvent]:
    """The whole job behind the Optimize button, as a stream of events.

    Base image for (prompt, seed) and its score -> the optimization, step by step -> the LoRA file, the image
    for the same seed with the LoRA at scale 1, and its score. The shared pipeline never keeps the LoRA.
    `controls`: one line per visual prompt (metadata); `init_path`: a LoRA file the run continues from.
    `stop_file`: when this file appears (the page's Stop), the run ends after the current step and keeps what it
    trained: the LoRA so far is saved and judged like a finished one. A file, not an event: on ZeroGPU the run
    is in another process. `steering`: `optimize`'s views, noises and keep (absent: the preset's).
    """
    if overlay is not None:
        overlay = overlays.overlay_array(overlay)
    with lock:
        init = lora.read_parent(init_path, generator.transformer, generator.preset.name) if init_path else None
        cond = generator.encode(prompt)
        before = generator.generate(cond, seed)
        p_before = score_image(vlm, before, overlay, list(qa_pairs))
    yield RunEvent("start", before=before, p_before=p_before)
    result: Result | None = None
    def finish_now() -> bool:
        return stop_file is not None and os.path.exists(stop_file)

    # The prompt as text (its encoding is cached): the guard asks the judge whether the pictures still show it.
    for item in optimize_stream(generator, vlm, prompt, qa_pairs, lock=lock, overlay=overlay, steps=steps,
                                seed=seed, preview_every=preview_every(steps), target_p=target_p, init=init,
                                finish_now=finish_now, **(steering or {})):
        if isinstance(item, Result):
            result = item
        else:
            yield RunEvent("step", step=item)
    if not result.history:
        yield RunEvent("done", before=before, p_before=p_before, stopped_at=0)
        return
    save_result(result, str(out_path), generator, prompt, list(qa_pairs), overlay_description,
                None if controls is None else list(controls), seed)
    with lock:
        after = generator.generate(cond, seed, lora_path=out_path, scale=1.0)
        p_after = score_image(vlm, after, overlay, list(qa_pairs))
    yield RunEvent("done", before=before, p_before=p_before, after=after, p_after=p_after, path=str(out_path),
                   history=result.history, unseen=result.unseen, total_steps=result.total_steps,
                   parent=init.name if init else None, stopped_at=result.stopped_at)
