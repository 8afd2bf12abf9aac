"""The Gradio app: `page.py` builds the page from one module per tab (`tabs/`, no tab imports another); what the tabs
share is split by concern: `gpu.py` (the models and GPU functions), `sessions.py` (sessions and uploads),
`messages.py` (errors as the user reads them) and `context.py` (the `App` and how functions become events);
`controls.py`, `questions.py`, `runs.py`, `results.py` and `examples.py` are the app's logic, testable without a
browser. The engine (`pipelines/`) never imports this."""

from .page import MCP_TOOLS, build_demo, choose_preset, expose_as_tools

__all__ = ["MCP_TOOLS", "build_demo", "choose_preset", "expose_as_tools"]
