"""Dual-process studio in the browser: steer a text-to-image model with a vision-language model.

    python app.py                         # no GPU: the offline `toy` preset on the CPU (the trained toy world)
    python app.py --preset flux-schnell   # with a GPU; or PRESET=flux-schnell python app.py
    python app.py --mcp                   # also an MCP server for agents (MCP=1 on a Space)

The entry point a Hugging Face Space runs. The page is built in `studio/` (one module per tab).
"""

from __future__ import annotations

try:  # ZeroGPU: `spaces` must be imported before anything touches CUDA
    import spaces  # noqa: F401
except ImportError:
    pass

import argparse
import os

import torch

from pipelines.checks import APP_MAX_UPLOAD_MB, MAX_QUEUE
from studio import build_demo, choose_preset, expose_as_tools
from studio.gpu import DEVICES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Dual-process studio: the Gradio app.")
    parser.add_argument("--preset", help="preset to serve (default: $PRESET, else flux-schnell with a GPU, toy "
                                         "without)")
    parser.add_argument("--host", default=None, help="address to listen on (default: Gradio's, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--max-queue", type=int, default=MAX_QUEUE, help="jobs that may wait in line")
    parser.add_argument("--gen-device", help="device of the generator (default: cuda if present)")
    parser.add_argument("--vlm-device", help="device of the VLM (default: the generator's)")
    parser.add_argument("--mcp", action="store_true", help="also serve the endpoints as MCP tools (for agents) at "
                                                           "/gradio_api/mcp/; MCP=1 does the same on a Space")
    args = parser.parse_args(argv)
    name, note = choose_preset(args.preset, os.environ.get("PRESET"), torch.cuda.is_available())
    if note:
        print(note)
    DEVICES.update(generator=args.gen_device, vlm=args.vlm_device)
    print(f"loading preset {name!r} ...")
    demo = build_demo(name, max_queue=args.max_queue, note=note)
    mcp = args.mcp or os.environ.get("MCP", "").strip().lower() in ("1", "true", "yes")
    if mcp:
        expose_as_tools(demo)
        print("serving MCP tools at /gradio_api/mcp/ (schema: /gradio_api/mcp/schema)")
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=f"{APP_MAX_UPLOAD_MB}mb",
                show_error=True, mcp_server=mcp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
