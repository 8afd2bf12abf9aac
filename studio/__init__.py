"""The Gradio app: `page.py` builds the page from one module per tab (`tabs/`); `shared.py` holds what the tabs
share (models, GPU functions, errors, sessions); `controls.py`, `questions.py`, `runs.py`, `results.py` and
`examples.py` are the app's logic, testable without a browser. The engine (`pipelines/`) never imports this."""

from .page import MCP_TOOLS, build_demo, choose_preset, expose_as_tools

__all__ = ["MCP_TOOLS", "build_demo", "choose_preset", "expose_as_tools"]
