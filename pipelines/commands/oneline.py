"""What every command uses to end in one line: a parser whose usage errors are one line, and `fail`. Nothing here
imports a model library, so a command that runs before they are installed (the GPU suite) can use it."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints the usage too; one line is easier to read
        self.exit(2, f"error: {message} (see --help)\n")


def parser(description: str) -> argparse.ArgumentParser:
    return OneLineParser(description=description)


def fail(message: str) -> NoReturn:
    """End the command with one line on stderr and exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)
