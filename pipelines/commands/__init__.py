"""The command-line tools, apart from the engine: each module holds one tool's argument parser and `main()`, and
`cli.py` what they share (model arguments, one-line errors). The engine (`pipelines/*.py`) imports none of this;
`python -m pipelines.<tool>` still runs each tool through a two-line guard at the end of its engine module."""
