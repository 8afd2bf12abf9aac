"""Every command in README.md runs as written, in order, on the offline presets (the set-up commands in the clone,
the tools in one empty folder): a reader who copies them meets no error. Only commands marked `# GPU` are skipped;
the test command itself is what .ci/run runs, and `python app.py` is started and asked for its page."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STARTS = ("python", "pip", "printf", "accelerate")


def readme_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) for every shell command in the README's indented code blocks, continuation lines
    joined; a block's other lines (Python, JSON) are not commands."""
    commands, pending, start = [], "", 0
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if not line.startswith("    ") or (pending == "" and line[4:].split(" ")[0] not in STARTS):
            continue
        body = line[4:].strip()
        if not pending:
            start = number
        if body.endswith("\\"):
            pending += body[:-1].rstrip() + " "
            continue
        commands.append((start, pending + body))
        pending = ""
    return commands


def comment(command: str) -> str:
    """The command's trailing `# ...` comment ('' when none); a '#' inside quotes is not one."""
    quote = None
    for i, ch in enumerate(command):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or command[i - 1].isspace()):
            return command[i + 1:].strip()
    return ""


def is_gpu(command: str) -> bool:
    return re.match(r"GPU\b", comment(command)) is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(tmp: Path) -> dict[str, str]:
    """This Python as `python`, the repository on PYTHONPATH, nothing from the hub."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").unlink(missing_ok=True)
    (bin_dir / "python").symlink_to(sys.executable)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
            "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "TOKENIZERS_PARALLELISM": "false"}


def run_here(command: str, cwd: Path, capfd) -> tuple[int, str]:
    """A plain `python -m module args` or `python -c code` run in this process (the same module, the same argv, in
    `cwd`): a fresh interpreter per command would spend most of the test importing torch. Anything with shell syntax
    goes to bash instead (returns None)."""
    import contextlib
    import runpy
    import warnings

    words = shlex.split(command, comments=True)
    if words[:1] != ["python"] or len(words) < 3 or words[1] not in ("-m", "-c") or any(
            w in ("|", ">", "&&", ";", "<") for w in words):
        return None
    old_argv, old_cwd = sys.argv, os.getcwd()
    code = 0
    try:
        os.chdir(cwd)
        if words[1] == "-m":
            sys.argv = [words[2], *words[3:]]
            try:
                with warnings.catch_warnings():  # earlier tests imported the module; running it again is the point
                    warnings.filterwarnings("ignore", message=".*found in sys.modules", category=RuntimeWarning)
                    runpy.run_module(words[2], run_name="__main__", alter_sys=True)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        else:
            sys.argv = ["-c", *words[3:]]
            with contextlib.suppress(SystemExit):
                exec(compile(words[2], "<readme>", "exec"), {"__name__": "__main__"})
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    out = capfd.readouterr()
    return code, out.out + out.err


def serve(command: str, cwd: Path, env: dict[str, str]) -> None:
    """Start the app as written, wait for its page, stop it."""
    port = free_port()
    process = subprocess.Popen(["bash", "-c", command], cwd=cwd, env={**env, "GRADIO_SERVER_PORT": str(port)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert process.poll() is None, f"{command!r} ended: {process.stdout.read()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
                    assert page.status == 200 and b"Dual-process studio" in page.read()
                    return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"{command!r} served no page within 240 s")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def test_readme_commands_are_found_and_marked():
    commands = readme_commands((ROOT / "README.md").read_text())
    texts = [c for _, c in commands]
    assert any("pipelines.optimize --preset toy" in c for c in texts) and any("python app.py" in c for c in texts)
    assert all(not re.search(r"\[--?\w", c.split(" # ")[0]) for c in texts), "a command with [optional] parts"
    assert [c for c in texts if is_gpu(c)] == [
        "python -m pipelines.bench --preset flux-schnell --random-weights --size 512   # GPU"]
    assert comment('python -m x --colors "#2b1d0e;#8c6d46"') == ""


@pytest.mark.slow  # about twenty commands, each loading a model
def test_every_readme_command_runs_as_written(tmp_path, capfd, monkeypatch):
    env, ran = environment(tmp_path), []
    for key in ("PYTHONPATH", "HF_HUB_OFFLINE", "GRADIO_ANALYTICS_ENABLED", "TOKENIZERS_PARALLELISM"):
        monkeypatch.setenv(key, env[key])
    ci = (ROOT / ".ci" / "run").read_text()
    for line, command in readme_commands((ROOT / "README.md").read_text()):
        if is_gpu(command):
            continue
        if "-m pytest" in command:  # the suite itself: .ci/run runs exactly this
            assert command.split("&& ")[-1].replace("python ", "python3 ") in ci, command
            continue
        # The set-up commands run where a reader runs them, in the clone; the tools in an empty folder.
        cwd = ROOT if "requirements" in command or "app.py" in command else tmp_path
        if "python app.py" in command:
            serve(command, cwd, env)
            ran.append(command)
            continue
        here = run_here(command, cwd, capfd)
        if here is None:
            done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=600)
            here = done.returncode, done.stdout + done.stderr
        code, output = here
        assert code == 0, f"README.md line {line}: {command}\n{output[-3000:]}"
        assert "Traceback" not in output, f"README.md line {line}: {command}\n{output[-3000:]}"
        if said := re.match(r'prints "(.*)"', comment(command)):
            # Progress bars fill the tail, so the failure names the lines that begin like the promise.
            near = [row for row in output.replace("\r", "\n").splitlines() if row.startswith(said.group(1)[:8])]
            assert said.group(1) in output, f"README.md line {line} says it prints {said.group(1)!r}; printed {near}"
        ran.append(command)
    assert len(ran) >= 16, ran
