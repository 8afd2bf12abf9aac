"""Parsing hand-drawn ImageEditor layers into control parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from overlays import horizon
from overlays.canvas import (
    as_layer,
    horizon_from_layer,
    is_blank,
    merge_layers,
    point_from_click,
    points_from_layer,
    stroke_thickness,
)

BRUSH = (40, 200, 90)


def paint(size, draw_fn) -> np.ndarray:
    """An RGBA layer, alpha > 0 only where painted, like gr.ImageEditor returns."""
    alpha = Image.new("L", size, 0)
    draw_fn(ImageDraw.Draw(alpha))
    a = np.asarray(alpha)
    layer = np.zeros((size[1], size[0], 4), dtype=np.uint8)
    layer[a > 0] = (*BRUSH, 0)
    layer[..., 3] = a
    return layer


def hand_stroke(
    size, y, tilt, radius=4.0, jitter=3.0, tremor=1.0, gaps=(), seed=0, span=(0.04, 0.96)
) -> np.ndarray:
    """A wobbly stroke drawn by dabbing a round brush along a noisy line; gaps as (x0, x1) fractions.

    jitter: std (px) of a slow wobble; tremor: std (px) of per-dab shake (this widens the stroke)."""
    width, height = size
    rng = np.random.default_rng(seed)
    xs = np.arange(span[0] * width, span[1] * width, 0.7)
    # low-frequency wobble plus per-dab tremor, as a hand would make
    wobble = np.convolve(rng.normal(0, 1, len(xs) + 60), np.ones(61) / 61**0.5, "valid")[: len(xs)]
    wobble *= jitter / max(wobble.std(), 1e-9)
    shake = rng.normal(0, tremor, len(xs))
    rows = y * height - math.tan(math.radians(tilt)) * (xs - (width - 1) / 2) + wobble + shake

    def draw(d):
        for x, r in zip(xs, rows, strict=True):
            if any(g0 * width <= x <= g1 * width for g0, g1 in gaps):
                continue
            d.ellipse([x - radius, r - radius, x + radius, r + radius], fill=255)

    return paint(size, draw)


# ---------- horizon ----------


@pytest.mark.parametrize(
    "size, y, tilt, kwargs",
    [
        ((512, 512), 0.4, 0.0, {}),
        ((512, 512), 0.62, 0.0, {"jitter": 6.0, "seed": 3}),
        ((512, 320), 0.5, 10.0, {}),
        ((333, 517), 0.3, -20.0, {"seed": 5}),
        ((512, 512), 0.55, 30.0, {"radius": 2.0}),
        ((512, 512), 0.45, 5.0, {"gaps": [(0.2, 0.35), (0.55, 0.6), (0.8, 0.9)]}),
        ((640, 360), 0.7, -8.0, {"gaps": [(0.1, 0.45)], "jitter": 4.0, "seed": 9}),
        # a partial stroke, extrapolated to the centre (a slow 3 px wobble over 230 px would itself
        # be a 1.5 deg tilt, hence less jitter)
        ((512, 512), 0.35, 3.0, {"span": (0.3, 0.75), "jitter": 1.5}),
    ],
)
def test_horizon_from_hand_drawn_strokes(size, y, tilt, kwargs):
    got_y, got_tilt = horizon_from_layer(hand_stroke(size, y, tilt, **kwargs))
    assert abs(got_y - y) < 0.02, (got_y, y)
    assert abs(got_tilt - tilt) < 1.5, (got_tilt, tilt)


def test_horizon_ignores_stray_marks():
    layer = hand_stroke((512, 512), 0.4, 6.0)
    extra = paint(
        (512, 512),
        lambda d: (
            d.ellipse([60, 420, 110, 470], fill=255),
            d.line([(300, 60), (330, 80)], fill=255, width=5),
        ),
    )
    got_y, got_tilt = horizon_from_layer(merge_layers([layer, extra]))
    assert abs(got_y - 0.4) < 0.02 and abs(got_tilt - 6.0) < 1.5


@pytest.mark.parametrize("tilt", [-30.0, 0.0, 12.5])
def test_horizon_roundtrip_with_render(tilt):
    spec = horizon.Spec(0.6, tilt=tilt)
    got_y, got_tilt = horizon_from_layer(np.asarray(horizon.render(spec, (400, 300))))
    assert abs(got_y - 0.6) < 0.01 and abs(got_tilt - tilt) < 0.5


def test_horizon_blank_and_unusable():
    blank = np.zeros((64, 80, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="the canvas is blank: draw the horizon"):
        horizon_from_layer(blank)
    with pytest.raises(ValueError, match="the canvas is blank"):
        horizon_from_layer([])
    with pytest.raises(ValueError, match="the canvas is blank"):
        horizon_from_layer({"background": None, "layers": [], "composite": None})
    short = paint((200, 100), lambda d: d.line([(90, 50), (100, 50)], fill=255, width=3))
    with pytest.raises(ValueError, match="spans only 10 of 200 px"):
        horizon_from_layer(short)
    steep = paint((200, 200), lambda d: d.line([(80, 10), (120, 190)], fill=255, width=3))
    with pytest.raises(ValueError, match="tilted -?7\\d.\\d deg"):
        horizon_from_layer(steep)


# ---------- points ----------


def dots(size, specs) -> np.ndarray:
    """Painted discs given as (cx, cy, r) in pixels."""
    return paint(size, lambda d: [d.ellipse([x - r, y - r, x + r, y + r], fill=255) for x, y, r in specs])


def test_points_from_layer_two_largest_left_to_right():
    size = (512, 320)
    layer = dots(size, [(400, 80, 12), (100.5, 250.5, 9), (250, 160, 3)])  # the small one is a distractor
    (ax, ay), (bx, by) = points_from_layer(layer, n=2)
    assert abs(ax * 511 - 100.5) <= 1 and abs(ay * 319 - 250.5) <= 1
    assert abs(bx * 511 - 400) <= 1 and abs(by * 319 - 80) <= 1
    three = points_from_layer(layer, n=3)
    assert [round(p[0] * 511) for p in three] == [100, 250, 400]


def test_points_from_layer_components_and_errors():
    size = (128, 128)
    # a U shape is one dot even though its arms only join at the bottom
    u = paint(
        size,
        lambda d: (
            d.line([(20, 20), (20, 60), (60, 60), (60, 20)], fill=255, width=5),
            d.ellipse([95, 95, 105, 105], fill=255),
        ),
    )
    assert len(points_from_layer(u, n=2)) == 2
    with pytest.raises(ValueError, match="found 2 painted dot"):
        points_from_layer(u, n=3)
    speck = dots(size, [(30, 30, 6)])
    speck[100, 100, 3] = 255  # one stray pixel is not a dot
    with pytest.raises(ValueError, match="found 1 painted dot"):
        points_from_layer(speck, n=2)
    with pytest.raises(ValueError, match="the canvas is blank: draw 2 points"):
        points_from_layer(np.zeros((32, 32, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="n=0"):
        points_from_layer(speck, n=0)


def test_points_from_named_layers():
    # ImageEditor layers "point A", "point B": one dot per layer
    size = (256, 256)
    a, b = dots(size, [(200, 40, 6)]), dots(size, [(50, 220, 6)])
    assert points_from_layer(a, n=1) == pytest.approx([(200 / 255, 40 / 255)], abs=1 / 255)
    value = {"background": None, "layers": [a, b], "composite": None}
    assert points_from_layer(value)[0] == pytest.approx((50 / 255, 220 / 255), abs=1 / 255)


def test_point_from_click():
    assert point_from_click([0, 0], (512, 320)) == (0.0, 0.0)
    assert point_from_click((511, 319), (512, 320)) == (1.0, 1.0)
    assert point_from_click([255.5, 159.5], (512, 320)) == pytest.approx((0.5, 0.5))
    with pytest.raises(ValueError, match=r"click position \(512, 10\) is outside the 512x320 image"):
        point_from_click([512, 10], (512, 320))
    with pytest.raises(ValueError, match=r"click position \(-1, 10\) is outside"):
        point_from_click((-1, 10), (512, 320))
    with pytest.raises(ValueError, match="not an \\(x, y\\) pair"):
        point_from_click([3], (512, 320))


# ---------- thickness ----------


@pytest.mark.parametrize(
    "angle, width",
    [(0, 6), (0, 1), (25, 8), (-40, 5), (90, 5), (70, 11)],
)
def test_stroke_thickness_straight(angle, width):
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    rows, cols = np.mgrid[0:400, 0:400]
    # perpendicular distance to a line through the centre at `angle`
    d = (cols - 200) * s + (rows - 200) * c
    along = (cols - 200) * c - (rows - 200) * s
    band = (d >= -width / 2) & (d < width / 2) & (np.abs(along) < 150)
    layer = np.zeros((400, 400, 4), dtype=np.uint8)
    layer[band] = (*BRUSH, 255)
    assert abs(stroke_thickness(layer) - width) <= (0 if angle in (0, 90) else 1)


def test_stroke_thickness_hand_drawn_and_render():
    for tremor in (0.0, 1.0):  # per-dab shake widens the painted band: compare with the paint itself
        layer = hand_stroke((512, 512), 0.8, 2.0, radius=4.5, jitter=2.0, tremor=tremor)
        mask = layer[..., 3] > 0
        mean_height = mask.sum() / mask.any(axis=0).sum()  # area / length, for a nearly level stroke
        assert abs(stroke_thickness(layer) - mean_height) <= 1, mean_height
    from overlays import line_weight

    for px in (1, 3, 7):
        assert stroke_thickness(np.asarray(line_weight.render(line_weight.Spec(px), (512, 512)))) == px
    with pytest.raises(ValueError, match="the canvas is blank: draw a stroke"):
        stroke_thickness(np.zeros((10, 10, 4), dtype=np.uint8))


# ---------- layers ----------


def test_merge_layers_and_blank_detection():
    bottom = np.zeros((4, 5, 4), dtype=np.uint8)
    bottom[:, :2] = (255, 0, 0, 255)
    top = np.zeros((4, 5, 4), dtype=np.uint8)
    top[:, 1:3] = (0, 0, 255, 128)
    merged = merge_layers([bottom, None, top])
    assert tuple(merged[0, 0]) == (255, 0, 0, 255)
    assert tuple(merged[0, 2]) == (0, 0, 255, 128)
    r, g, b, a = merged[0, 1]
    assert a == 255 and abs(int(r) - 127) <= 1 and abs(int(b) - 128) <= 1 and g == 0
    assert tuple(merged[0, 4]) == (0, 0, 0, 0)
    assert merge_layers([], size=(5, 4)).shape == (4, 5, 4)
    with pytest.raises(ValueError, match="the canvas is blank"):
        merge_layers([])
    with pytest.raises(ValueError, match=r"layer 2 has shape \(3, 5, 4\), layer 1 has \(4, 5, 4\)"):
        merge_layers([bottom, bottom[:3]])
    with pytest.raises(ValueError, match="uint8 RGBA"):
        merge_layers([bottom[..., :3]])
    assert is_blank([]) and is_blank({"layers": []}) and is_blank(np.zeros((3, 3, 4), dtype=np.uint8))
    assert not is_blank(bottom) and not is_blank([None, top])
    assert as_layer(Image.fromarray(top, "RGBA")).shape == (4, 5, 4)
