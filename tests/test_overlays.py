"""Rendering, questions, compositing and validation of the visual-prompt overlays."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from overlays import (
    CONTROLS,
    Control,
    composite,
    composition,
    depth,
    horizon,
    line_weight,
    palette,
)
from overlays.colors import as_rgb, lab_to_srgb, parse_color, srgb_to_lab, to_hex

SIZES = [(64, 64), (512, 320), (333, 517)]
SUFFIX = "Answer with Yes or No."


def arr(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGBA"
    return np.asarray(img)


def red_mask(a: np.ndarray) -> np.ndarray:
    return (a[..., 0] == 255) & (a[..., 1] == 0) & (a[..., 2] == 0) & (a[..., 3] == 255)


def example_specs() -> dict[str, object]:
    ref = Image.new("RGB", (40, 30), "white")
    return {
        "palette": palette.Spec(["#ff0000", (0, 255, 0), "rgb(0, 0, 255)"]),
        "horizon": horizon.Spec(0.4),
        "line-weight": line_weight.Spec(3),
        "depth": depth.Spec((0.3, 0.7), (0.7, 0.3)),
        "composition": composition.Spec(ref, ["Is there a tree?"]),
    }


# ---------- shared interface ----------


def test_controls_registry_and_interface():
    assert set(CONTROLS) == {"palette", "horizon", "line-weight", "depth", "composition"}
    specs = example_specs()
    for name, module in CONTROLS.items():
        assert module.name == name and isinstance(module, Control)
        spec = specs[name]
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.__setattr__("mode", "x")
        img = module.render(spec, (64, 48)) if name != "composition" else None
        if img is not None:
            assert img.mode == "RGBA" and img.size == (64, 48)
            a = arr(img)
            assert (a[..., 3] == 0).any() and (a[..., 3] > 0).any()
        qs = module.questions(spec)
        assert qs and all(q.endswith(SUFFIX) and ans in ("Yes", "No") for q, ans in qs)
        line = module.describe(spec)
        assert line and "\n" not in line


def test_paper_questions():
    specs = example_specs()
    assert palette.questions(specs["palette"]) == [
        (
            "Do the colors of the image match the color palette shown at the bottom? Answer with Yes or No.",
            "Yes",
        )
    ]
    assert horizon.questions(specs["horizon"]) == [
        ("Is the horizon of the scene aligned with the red line? Answer with Yes or No.", "Yes")
    ]
    assert line_weight.questions(specs["line-weight"]) == [
        (
            (
                "Is the red line at the bottom representative of the line weight of the image? "
                "Answer with Yes or No."
            ),
            "Yes",
        )
    ]
    assert depth.questions(depth.Spec((0.1, 0.1), (0.9, 0.9), "foreground")) == [
        ("Is Point A in the foreground and Point B in the background? Answer with Yes or No.", "Yes")
    ]
    assert depth.questions(depth.Spec((0.1, 0.1), (0.9, 0.9), "closer", contrast=True)) == [
        ("Is Point A closer to the camera than Point B? Answer with Yes or No.", "Yes"),
        ("Is Point B closer to the camera than Point A? Answer with Yes or No.", "No"),
    ]


def test_describe_lines():
    assert horizon.describe(horizon.Spec(0.35)) == "horizon at y=0.35, tilt 0.0 deg"
    assert line_weight.describe(line_weight.Spec(4)) == "line weight 4 px"
    assert "#ff0000" in palette.describe(palette.Spec(["#f00", "#00f"]))


# ---------- horizon ----------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("y", [0.2, 0.5, 0.83])
def test_horizon_rows(size, y):
    width, height = size
    a = arr(horizon.render(horizon.Spec(y), size))
    t = max(2, round(height / 128))
    rows = np.flatnonzero(red_mask(a).all(axis=1))
    start = round(y * height) - t // 2
    assert rows.tolist() == list(range(start, start + t))
    # nothing else drawn: alpha 0 off the line
    assert (a[..., 3] > 0).sum() == t * width


def test_horizon_thickness_override_and_tilt():
    a = arr(horizon.render(horizon.Spec(0.5, thickness=7), (100, 100)))
    assert red_mask(a).all(axis=1).sum() == 7
    # tilt: right side higher, centre column stays at y
    a = arr(horizon.render(horizon.Spec(0.5, tilt=20), (400, 400)))
    m = red_mask(a)
    left = np.flatnonzero(m[:, 10]).mean()
    right = np.flatnonzero(m[:, 389]).mean()
    centre = np.flatnonzero(m[:, 200]).mean()
    assert right < left
    assert abs(math.degrees(math.atan((left - right) / 379)) - 20) < 0.5
    assert abs(centre - 200) <= 1.5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"y": 0}, "horizon height 0 is outside"),
        ({"y": 1}, "horizon height 1 is outside"),
        ({"y": 1.5}, "horizon height 1.5 is outside"),
        ({"y": -0.2}, r"horizon height -0.2 is outside \(0, 1\)"),
        ({"y": float("nan")}, "horizon height nan"),
        ({"y": 0.5, "tilt": 50}, "horizon tilt 50 deg"),
        ({"y": 0.5, "thickness": 0}, "horizon thickness 0"),
    ],
)
def test_horizon_bad(kwargs, match):
    with pytest.raises(ValueError, match=match):
        horizon.Spec(**kwargs)


# ---------- palette ----------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("n", [2, 3, 7, 8])
def test_palette_swatches(size, n):
    width, height = size
    colors = [(37 * i % 256, 255 - 29 * i, 80 + 20 * i) for i in range(n)]
    spec = palette.Spec(colors, strip_height=0.15)
    a = arr(palette.render(spec, size))
    strip = max(1, round(0.15 * height))
    painted_rows = np.flatnonzero((a[..., 3] == 255).all(axis=1))
    assert painted_rows.tolist() == list(range(height - strip, height))
    assert (a[: height - strip, :, 3] == 0).all()
    bounds = palette.swatch_bounds(n, width)
    assert bounds[0][0] == 0 and bounds[-1][1] == width
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(n - 1))
    assert len({x1 - x0 for x0, x1 in bounds[:-1]}) <= 1
    for (x0, x1), c in zip(bounds, colors, strict=True):
        assert tuple(a[height - strip // 2 - 1, (x0 + x1) // 2, :3]) == c
        assert (a[height - strip :, x0:x1, :3] == c).all()


def test_palette_default_strip_is_ten_percent():
    a = arr(palette.render(palette.Spec(["#000", "#fff"]), (200, 300)))
    assert (a[..., 3] == 255).all(axis=1).sum() == 30


def test_palette_presets():
    presets = palette.load_presets()
    assert {"dark academia", "pastel", "retro"} <= set(presets)
    assert 6 <= len(presets) <= 8
    raw = json.loads(palette.PRESETS_PATH.read_text())
    for name, colors in raw.items():
        assert 4 <= len(colors) <= 6, name
        assert all(c.startswith("#") and len(c) == 7 for c in colors)
        [parse_color(c) for c in colors]
    spec = palette.Spec.from_preset(" Dark  Academia ")
    assert [to_hex(c) for c in spec.colors] == [c.lower() for c in raw["dark academia"]]


def test_palette_unknown_preset_lists_available():
    with pytest.raises(ValueError, match=r"unknown palette preset 'vaporwave'.*available:.*pastel.*retro"):
        palette.Spec.from_preset("vaporwave")


@pytest.mark.parametrize(
    "colors, match",
    [
        (["#ff0000"], "palette has 1 swatches; it needs 2 to 8"),
        (["#ff0000"] * 9, "palette has 9 swatches"),
        (["#ff0000", "#12345g"], "colour '#12345g'"),
        (["#ff0000", (1, 2, 300)], r"colour \(1, 2, 300\)"),
        ("#ff0000", "must be a list of colours"),
    ],
)
def test_palette_bad(colors, match):
    with pytest.raises(ValueError, match=match):
        palette.Spec(colors)


def test_palette_bad_strip_height_and_width():
    with pytest.raises(ValueError, match="strip height 0.9"):
        palette.Spec(["#000", "#fff"], strip_height=0.9)
    with pytest.raises(ValueError, match="width 5 px is too small for 8 swatches"):
        palette.render(palette.Spec(["#000"] * 8), (5, 50))


def test_extract_palette_recovers_blocks():
    # blocks of decreasing area: dominant colour first
    spec = [
        ((200, 30, 40), 200),
        ((20, 120, 200), 120),
        ((240, 220, 90), 70),
        ((30, 150, 60), 40),
        ((90, 40, 120), 20),
    ]
    img = np.zeros((300, 450, 3), dtype=np.uint8)
    x = 0
    for color, w in spec:
        img[:, x : x + w] = color
        x += w
    # add mild noise so the clusters are not single points
    rng = np.random.default_rng(1)
    noisy = np.clip(img.astype(int) + rng.integers(-3, 4, img.shape), 0, 255).astype(np.uint8)
    got = palette.extract_palette(Image.fromarray(noisy), k=5)
    assert len(got) == 5
    for (want, _), have in zip(spec, got, strict=True):
        assert max(abs(p - q) for p, q in zip(want, have, strict=True)) <= 4, (want, have)
    assert palette.extract_palette(Image.fromarray(noisy), k=5) == got  # deterministic


def test_extract_palette_few_colours_and_bad_k():
    img = Image.new("RGB", (2000, 1000), (10, 200, 30))
    img.paste((250, 250, 250), (0, 0, 500, 1000))
    assert palette.extract_palette(img, k=4) == [(10, 200, 30), (250, 250, 250)]
    with pytest.raises(ValueError, match="k=0"):
        palette.extract_palette(img, k=0)


# ---------- colours ----------


@pytest.mark.parametrize(
    "text, rgb",
    [
        ("#FF8000", (255, 128, 0)),
        ("  #ff8000 ", (255, 128, 0)),
        ("#f80", (255, 136, 0)),
        ("rgb(1, 2, 3)", (1, 2, 3)),
        ("RGB( 10 ,20,30 )", (10, 20, 30)),
        ("rgba(255, 0, 0.5, 1)", (255, 0, 0)),
        ("rgba(12.6, 254.5, 0, 0.25)", (13, 254, 0)),
    ],
)
def test_parse_color_valid(text, rgb):
    assert parse_color(text) == rgb


@pytest.mark.parametrize(
    "text",
    [
        "",
        "red",
        "#ff00",
        "#gg0000",
        "ff0000",
        "rgb(1, 2)",
        "rgb(256, 0, 0)",
        "rgb(-1, 0, 0)",
        "rgba(1, 2, 3)",
        "rgba(1, 2, 3, 2)",
        "rgb(1, 2, x)",
        "hsl(0, 100%, 50%)",
    ],
)
def test_parse_color_invalid_names_string(text):
    with pytest.raises(ValueError, match=f"colour {text!r}".replace("(", r"\(").replace(")", r"\)")):
        parse_color(text)


def test_as_rgb_and_lab_roundtrip():
    assert as_rgb((1, 2, 3)) == (1, 2, 3)
    with pytest.raises(ValueError, match="colour"):
        as_rgb((1.5, 2, 3))
    rgb = np.random.default_rng(0).integers(0, 256, (500, 3))
    assert np.abs(lab_to_srgb(srgb_to_lab(rgb)) - rgb).max() < 0.01
    white = srgb_to_lab(np.array([255, 255, 255]))
    assert abs(white[0] - 100) < 0.01 and abs(white[1]) < 0.01 and abs(white[2]) < 0.01
    red = srgb_to_lab(np.array([255, 0, 0]))
    assert np.allclose(red, [53.24, 80.09, 67.20], atol=0.05)


# ---------- line weight ----------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("px", [1, 2, 5])
def test_line_weight_thickness(size, px):
    width, height = size
    a = arr(line_weight.render(line_weight.Spec(px), size))
    m = red_mask(a)
    rows = np.flatnonzero(m.any(axis=1))
    assert len(rows) == px and np.all(np.diff(rows) == 1)
    assert rows[0] > height / 2  # near the bottom
    assert (a[..., 3] > 0).sum() == m.sum()
    cols = np.flatnonzero(m.any(axis=0))
    assert abs(len(cols) / width - 0.6) < 0.02
    assert abs((cols[0] + cols[-1]) / 2 - (width - 1) / 2) <= 1


def test_line_weight_bad():
    with pytest.raises(ValueError, match="line weight 0 px"):
        line_weight.Spec(0)
    with pytest.raises(ValueError, match="line weight -3 px"):
        line_weight.Spec(-3)
    with pytest.raises(ValueError, match="line weight 2.5 px"):
        line_weight.Spec(2.5)
    assert line_weight.render(line_weight.Spec(51), (512, 512)).size == (512, 512)
    with pytest.raises(ValueError, match=r"line weight 52 px exceeds the limit 51.2 px"):
        line_weight.render(line_weight.Spec(52), (512, 512))
    with pytest.raises(ValueError, match="line weight 40 px does not fit in an image 30 px high"):
        line_weight.render(line_weight.Spec(40), (512, 30))


# ---------- depth ----------


def dot_centroid(a: np.ndarray, near: tuple[float, float], radius: float) -> tuple[float, float]:
    rows, cols = np.nonzero(red_mask(a))
    sel = np.hypot(cols - near[0], rows - near[1]) < 2 * radius
    return cols[sel].mean(), rows[sel].mean()


def text_pixels(a: np.ndarray) -> np.ndarray:
    return (a[..., 3] > 0) & ~red_mask(a)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    "pa, pb", [((0.3, 0.7), (0.7, 0.3)), ((0.05, 0.05), (0.95, 0.95)), ((0.97, 0.5), (0.5, 0.98))]
)
def test_depth_dots_and_labels(size, pa, pb):
    spec = depth.Spec(pa, pb)
    a = arr(depth.render(spec, size))
    width, height = size
    r = depth.dot_radius(size)
    boxes = depth.label_boxes(spec, size)
    assert list(boxes) == ["Point A", "Point B"]
    for p, label in ((pa, "Point A"), (pb, "Point B")):
        want = (p[0] * (width - 1), p[1] * (height - 1))
        got = dot_centroid(a, want, r)
        assert math.dist(got, want) <= 1.0, (label, got, want)
        x0, y0, x1, y1 = boxes[label]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, (label, boxes[label])
        # readable text inside the box, next to its dot
        inside = text_pixels(a)[y0:y1, x0:x1]
        assert inside.sum() > 0.1 * (x1 - x0) * (y1 - y0)
        ink = a[y0:y1, x0:x1][inside][:, :3]
        assert (ink.min(axis=1) >= 200).sum() >= 10  # light fill
        assert (ink.max(axis=1) <= 60).sum() >= 10  # dark outline for contrast
        gap = max(x0 - want[0], want[0] - x1, y0 - want[1], want[1] - y1)
        assert gap <= 2 * r
    # all text lies in the label boxes
    boxed = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes.values():
        boxed[y0:y1, x0:x1] = True
    assert not (text_pixels(a) & ~boxed).any()


def test_depth_label_flips_left_near_right_edge():
    spec = depth.Spec((0.98, 0.5), (0.1, 0.5))
    box = depth.label_boxes(spec, (512, 512))["Point A"]
    assert box[2] < 0.98 * 511  # placed to the left of the dot
    box_b = depth.label_boxes(spec, (512, 512))["Point B"]
    assert box_b[0] > 0.1 * 511  # the roomy side stays the default (right)


@pytest.mark.parametrize(
    "a, b, match",
    [
        ((1.2, 0.5), (0.1, 0.1), r"Point A \(1.2, 0.5\) is outside the image"),
        ((0.5, 0.5), (0.1, -0.1), r"Point B \(0.1, -0.1\) is outside the image"),
        ((0.5, 0.5), (0.52, 0.51), "on top of each other"),
        ((0.5,), (0.1, 0.1), "Point A"),
        ((0.5, "x"), (0.1, 0.1), "Point A y 'x'"),
    ],
)
def test_depth_bad_points(a, b, match):
    with pytest.raises(ValueError, match=match):
        depth.Spec(a, b)


def test_depth_relations():
    a, b = (0.2, 0.2), (0.8, 0.8)
    assert "further from the camera" in depth.questions(depth.Spec(a, b, "further"))[0][0]
    assert "Point A in the background" in depth.questions(depth.Spec(a, b, "Background"))[0][0]
    with pytest.raises(ValueError, match="depth relation 'behind'"):
        depth.Spec(a, b, "behind")


# ---------- composition ----------


def reference(size=(64, 48)) -> Image.Image:
    img = Image.new("RGB", size, (255, 255, 255))
    img.paste((250, 245, 241), (0, 0, 8, 8))  # white-ish: transparent in solid mode
    img.paste((0, 0, 200), (10, 10, 30, 30))
    img.paste((255, 0, 0), (40, 5, 44, 40))
    return img


def test_composition_transparent_and_solid():
    ref = reference()
    t = arr(composition.render(composition.Spec(ref, ["q"]), (64, 48)))
    assert (t[..., 3] == 128).all()
    assert tuple(t[20, 20, :3]) == (0, 0, 200)
    s = arr(composition.render(composition.Spec(ref, ["q"], mode="solid"), (64, 48)))
    assert (s[2, 2] == 0).all() and (s[45, 60] == 0).all()
    assert tuple(s[20, 20]) == (0, 0, 200, 255) and tuple(s[20, 42]) == (255, 0, 0, 255)
    assert (s[..., 3] == 255).sum() == 20 * 20 + 4 * 35


def test_composition_questions_get_suffix():
    spec = composition.Spec(
        reference(), ["Is this line a tree?", "Is the region a field? Answer with Yes or No."]
    )
    assert composition.questions(spec) == [
        ("Is this line a tree? Answer with Yes or No.", "Yes"),
        ("Is the region a field? Answer with Yes or No.", "Yes"),
    ]


def test_composition_resizes_with_warning():
    spec = composition.Spec(reference((64, 48)), ["q"], mode="solid")
    assert composition.notes(spec, (64, 48)) == []
    assert composition.notes(spec, (128, 96)) == [
        "composition reference 64x48 was resized to the image size 128x96"
    ]
    with pytest.warns(UserWarning, match="64x48 was resized to the image size 128x96"):
        img = composition.render(spec, (128, 96))
    assert img.size == (128, 96)
    assert tuple(arr(img)[40, 40]) == (0, 0, 200, 255)


def test_composition_from_path(tmp_path):
    path = tmp_path / "ref.png"
    reference().save(path)
    spec = composition.Spec(str(path), ["q"])
    assert spec.reference.size == (64, 48)
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="cannot read composition reference .*not-an-image.png"):
        composition.Spec(bad, ["q"])
    with pytest.raises(ValueError, match="cannot read composition reference .*missing.png"):
        composition.Spec(tmp_path / "missing.png", ["q"])


@pytest.mark.parametrize(
    "questions, mode, match",
    [
        ([], "solid", "at least one question, got an empty list"),
        (["ok", "   "], "solid", "composition question 2 '   ' is blank"),
        ("Is it a tree?", "solid", "must be a list"),
        (["ok"], "opaque", "composition mode 'opaque'"),
    ],
)
def test_composition_bad(questions, mode, match):
    with pytest.raises(ValueError, match=match):
        composition.Spec(reference(), questions, mode)


# ---------- composite ----------


def half_overlay(height=8, width=6, alpha=255) -> np.ndarray:
    ov = np.zeros((height, width, 4), dtype=np.uint8)
    ov[:, : width // 2] = (255, 0, 0, alpha)
    return ov


@pytest.mark.parametrize("batched", [True, False])
def test_composite_gradient(batched):
    shape = (2, 3, 8, 6) if batched else (3, 8, 6)
    pixels = torch.rand(shape, requires_grad=True)
    out = composite(pixels, Image.fromarray(half_overlay(), "RGBA"))
    assert out.shape == pixels.shape and out.dtype == pixels.dtype
    ((out - 0.3) ** 2).sum().backward()
    g = pixels.grad
    covered, uncovered = g[..., :, :3], g[..., :, 3:]
    assert (covered == 0).all()
    assert (uncovered != 0).all()
    assert torch.equal(out[..., 0, :, :3].detach(), torch.ones_like(out[..., 0, :, :3]))
    assert torch.equal(out[..., :, :, 3:].detach(), pixels[..., :, :, 3:].detach())


def test_composite_partial_alpha_values_and_dtype():
    pixels = torch.full((1, 3, 8, 6), 0.5, dtype=torch.float64, requires_grad=True)
    out = composite(pixels, half_overlay(alpha=51))
    assert out.dtype == torch.float64
    a = 51 / 255
    assert torch.allclose(out[0, 0, 0, 0], torch.tensor(0.5 * (1 - a) + a, dtype=torch.float64))
    assert torch.allclose(out[0, 1, 0, 0], torch.tensor(0.5 * (1 - a), dtype=torch.float64))
    out.sum().backward()
    assert torch.allclose(pixels.grad[0, 0, 0, 0], torch.tensor(1 - a, dtype=torch.float64))
    half = composite(torch.rand(3, 8, 6, dtype=torch.bfloat16), half_overlay())
    assert half.dtype == torch.bfloat16


def test_composite_with_rendered_horizon_blocks_only_the_line():
    pixels = torch.rand(1, 3, 64, 64, requires_grad=True)
    composite(pixels, horizon.render(horizon.Spec(0.5), (64, 64))).sum().backward()
    zero_rows = torch.nonzero((pixels.grad[0, 0] == 0).all(dim=1)).flatten().tolist()
    assert zero_rows == [31, 32]


def test_composite_bad_sizes():
    with pytest.raises(ValueError, match=r"overlay size 6x8 does not match image size 64x32"):
        composite(torch.rand(3, 32, 64), half_overlay())
    with pytest.raises(ValueError, match="pixels must be"):
        composite(torch.rand(4, 8, 6), half_overlay())
    with pytest.raises(ValueError, match=r"\(H, W, 4\) uint8"):
        composite(torch.rand(3, 8, 6), np.zeros((8, 6, 3), dtype=np.uint8))


def test_examples_main_writes_pngs(tmp_path):
    from overlays import examples

    paths = examples.main(tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{n}.png" for n in CONTROLS)
    for p in paths:
        with Image.open(p) as img:
            assert img.size == (512, 512)
