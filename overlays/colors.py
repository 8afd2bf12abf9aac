"""Colour parsing and sRGB <-> CIELAB conversion (D65), shared by the palette control and the UI."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

RGB = tuple[int, int, int]

_HEX = re.compile(r"#([0-9a-f]{3}|[0-9a-f]{6})")
_FUNC = re.compile(r"(rgba?)\((.*)\)")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([e][+-]?\d+)?")

# D65 reference white and the sRGB -> XYZ matrix (IEC 61966-2-1).
_WHITE = np.array([0.95047, 1.0, 1.08883])
_RGB2XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_XYZ2RGB = np.linalg.inv(_RGB2XYZ)
_EPS = 216 / 24389  # CIE constants, exact form avoids a visible kink at the threshold
_KAPPA = 24389 / 27


def parse_color(s: str) -> RGB:
    """Parse "#rrggbb", "#rgb", "rgb(r, g, b)" or "rgba(r, g, b, a)" into an (r, g, b) int tuple.

    Case and whitespace are ignored; components may be floats (Gradio's ColorPicker sends e.g.
    "rgba(255, 0, 0.5, 1)") and are rounded, then must lie in 0..255; alpha must lie in 0..1 and is dropped.
    """
    text = re.sub(r"\s+", "", s).lower() if isinstance(s, str) else ""  # a non-string fails below
    if m := _HEX.fullmatch(text):
        digits = m.group(1)
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))
    if m := _FUNC.fullmatch(text):
        kind, parts = m.group(1), m.group(2).split(",")
        if len(parts) != len(kind) or not all(_NUMBER.fullmatch(p) for p in parts):
            raise ValueError(f"colour {s!r} is not a valid {kind}(...) colour")
        values = [float(p) for p in parts]
        if kind == "rgba" and not 0.0 <= values[3] <= 1.0:
            raise ValueError(f"colour {s!r} has alpha {parts[3]} outside 0..1")
        rgb = tuple(round(v) for v in values[:3])
        if not all(0 <= v <= 255 for v in rgb):
            raise ValueError(f"colour {s!r} has a component outside 0..255")
        return rgb  # type: ignore[return-value]
    raise ValueError(f"colour {s!r} is not #rrggbb, #rgb, rgb(r, g, b) or rgba(r, g, b, a)")


def as_rgb(color: str | Sequence[int]) -> RGB:
    """Accept a colour string (see parse_color) or an (r, g, b) sequence of ints 0..255."""
    if isinstance(color, str):
        return parse_color(color)
    try:
        values = tuple(color)
    except TypeError:
        raise ValueError(f"colour {color!r} is neither a string nor an (r, g, b) tuple") from None
    ok = len(values) == 3 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= 255 for v in values
    )
    if not ok:
        raise ValueError(f"colour {color!r} is not an (r, g, b) tuple of ints in 0..255")
    return (int(values[0]), int(values[1]), int(values[2]))


def to_hex(rgb: Sequence[int]) -> str:
    """(r, g, b) -> "#rrggbb"."""
    r, g, b = as_rgb(rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB values in 0..255 (any shape ending in 3) -> CIELAB (L in 0..100), D65."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB2XYZ.T / _WHITE
    f = np.where(xyz > _EPS, np.cbrt(xyz), (_KAPPA * xyz + 16) / 116)
    lab = np.empty_like(f)
    lab[..., 0] = 116 * f[..., 1] - 16
    lab[..., 1] = 500 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200 * (f[..., 1] - f[..., 2])
    return lab


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (D65) -> sRGB floats in 0..255, clipped to the gamut."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f**3 > _EPS, f**3, (116 * f - 16) / _KAPPA) * _WHITE
    linear = np.clip(xyz @ _XYZ2RGB.T, 0.0, 1.0)
    c = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.clip(c * 255.0, 0.0, 255.0)


def parse_colors(text: str | None) -> list[RGB]:
    """Colours from free text: "#hex", "rgb(...)" or "rgba(...)" separated by spaces, commas or semicolons."""
    tokens = re.findall(r"rgba?\([^)]*\)|[^\s,;]+", text or "")
    if not tokens:
        raise ValueError("the palette is empty: give colours like #e63946 or rgb(230, 57, 70)")
    return [parse_color(t) for t in tokens]


def ciede2000_lab(lab_a: np.ndarray, lab_b: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference (kL = kC = kH = 1) between CIELAB arrays of any broadcastable shape (..., 3).

    Follows Sharma, Wu and Dalal (2005), "The CIEDE2000 colour-difference formula: implementation notes",
    including their conventions for the mean hue and the hue difference when a chroma is zero.
    """
    a = np.asarray(lab_a, dtype=np.float64)
    b = np.asarray(lab_b, dtype=np.float64)
    l1, a1, b1 = a[..., 0], a[..., 1], a[..., 2]
    l2, a2, b2 = b[..., 0], b[..., 1], b[..., 2]
    c_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_mean**7 / (c_mean**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    zero = (c1p * c2p) == 0  # a neutral colour has no hue: its hue terms vanish
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(zero, 0.0, dh)
    d_l = l2 - l1
    d_c = c2p - c1p
    d_h = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    l_mean = (l1 + l2) / 2
    cp_mean = (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_mean = np.where(np.abs(h1p - h2p) <= 180, h_sum / 2, np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2))
    h_mean = np.where(zero, h_sum, h_mean)
    t = (1 - 0.17 * np.cos(np.radians(h_mean - 30)) + 0.24 * np.cos(np.radians(2 * h_mean))
         + 0.32 * np.cos(np.radians(3 * h_mean + 6)) - 0.20 * np.cos(np.radians(4 * h_mean - 63)))
    d_theta = 30 * np.exp(-(((h_mean - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(cp_mean**7 / (cp_mean**7 + 25.0**7))
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    s_c = 1 + 0.045 * cp_mean
    s_h = 1 + 0.015 * cp_mean * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    return np.sqrt((d_l / s_l) ** 2 + (d_c / s_c) ** 2 + (d_h / s_h) ** 2 + r_t * (d_c / s_c) * (d_h / s_h))


def ciede2000(rgb_a: Sequence[int], rgb_b: Sequence[int]) -> float:
    """CIEDE2000 difference between two sRGB colours (about 1 is just noticeable; CIE76 overstates saturated ones)."""
    la, lb = srgb_to_lab(np.array(as_rgb(rgb_a))), srgb_to_lab(np.array(as_rgb(rgb_b)))
    return float(ciede2000_lab(la, lb))
