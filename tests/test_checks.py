"""Input checks in one place: image files opened under our own limits, numbers and text named in one line."""

from __future__ import annotations

import numpy as np
import pytest
from bad_files import png_claiming
from PIL import Image

from pipelines import checks


@pytest.mark.parametrize("name,content,message", [
    ("notes.png", b"hello, not an image", "not a readable image"),
    ("drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "not a readable image"),
    ("bomb.png", png_claiming(40_000, 40_000), "at most 8192 pixels a side"),
    ("wide.png", png_claiming(9000, 10), "9000x10 pixels; at most 8192 pixels a side"),
])
def test_bad_image_files_are_refused_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        checks.read_image(path, "RGB", what="palette image")
    assert f"palette image '{path}'" in str(info.value) and "\n" not in str(info.value)


def test_a_truncated_png_is_refused(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="cut.png.*not a readable image"):
        checks.read_image(path)
    with pytest.raises(FileNotFoundError, match="missing.png' does not exist"):
        checks.read_image(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        checks.read_image(tmp_path)


def test_odd_but_legal_images_are_read(tmp_path):
    deep = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")  # 16-bit grey: scaled to 8 bits, not clipped
    grey = np.asarray(checks.read_image(tmp_path / "deep.png", "L"))
    assert grey.min() == 0 and grey.max() == 255 and len(np.unique(grey)) > 100
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert checks.read_image(tmp_path / "anim.gif", "RGB").getpixel((0, 0))[0] > 200  # the first frame
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    assert checks.read_image(tmp_path / "cmyk.jpg", "RGB").getpixel((4, 4))[0] > 200
    Image.new("P", (1, 1)).save(tmp_path / "one.png")
    assert checks.read_image(tmp_path / "one.png").size == (1, 1)


@pytest.mark.parametrize("call,message", [
    (lambda: checks.check_seed(2**32), "seed 4294967296 must be a whole number from 0 to 4294967295"),
    (lambda: checks.check_seed(float("nan")), "seed nan"),
    (lambda: checks.check_seed("7"), "seed '7'"),
    (lambda: checks.check_steps(2.5), "steps 2.5"),
    (lambda: checks.check_steps(600, checks.APP_MAX_STEPS), "steps 600 must be a whole number from 1 to 500"),
    (lambda: checks.check_prompt("\x00\x07  \t"), "the prompt is empty"),
    (lambda: checks.check_text("\u200b", "question"), "the question is empty"),
])
def test_numbers_and_text_are_named(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_legal_odd_text_is_accepted():
    assert checks.check_prompt("  a beach at noon 🏖️ ") == "a beach at noon 🏖️"
    assert checks.check_seed(2**32 - 1) == 2**32 - 1 and checks.check_seed(3.0) == 3


def test_output_paths_are_checked_before_anything_runs(tmp_path):
    assert checks.check_output(tmp_path / "new" / "deeper" / "x.safetensors", (".safetensors",)).name == "x.safetensors"
    with pytest.raises(ValueError, match="must end in .safetensors"):
        checks.check_output(tmp_path / "x.pt", (".safetensors",))
    (tmp_path / "a.safetensors").mkdir()
    with pytest.raises(ValueError, match="a.safetensors' is a folder"):
        checks.check_output(tmp_path / "a.safetensors", (".safetensors",))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="'.*file' is a file, not a folder"):
        checks.check_output(tmp_path / "file" / "x.png", (".png",))
    with pytest.raises(ValueError, match="is read-only"):  # /proc/1 is not writable, even by root
        checks.check_output("/proc/1/x.png", (".png",))
