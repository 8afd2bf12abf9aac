"""The toy world: landscapes described by a small grammar of prompts, rendered crisply, and read back from pixels.

Everything here is a pure function of its arguments, so the truth about an image (where its horizon is, which scene,
time and mood it shows, whether a sun, a tree, clouds or birds are in it) comes from its pixels alone, never from the
models being measured. The app, the evaluation and the trainer import this; it imports no model code.

A prompt is a scene, optionally a time, then comma-separated attributes; unknown words are ignored:

    a beach
    a beach at golden hour, low horizon, clear sky, the sun, a lone tree on the right, vivid colours, birds in the sky

`parse` reads a prompt's attributes, `sample` draws a `Scene` that satisfies them (what it does not name is drawn
freely), `render` paints it, `read` measures an image, `alignment` is the fraction of the prompt's attributes present,
`aesthetic` scores an image on plain photographic rules (0-5) and `artefacts` is its high-frequency energy relative
to clean renders (tiled textures and stripes raise it).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image
from scipy import ndimage

from overlays.colors import ciede2000_lab, srgb_to_lab
from overlays.palette import extract_palette

from .steering import high_frequency

SIZE = 112  # Flux packs 16 px cells and Qwen merges 28 px ones: 112 keeps both whole
RGB = tuple[float, float, float]

# ---------- the grammar ----------------------------------------------------------------------------------------------

# Ground colours far (at the horizon, hazier) and near (the bottom edge), in full daylight.
SCENES: dict[str, tuple[RGB, RGB]] = {
    "a beach": ((236, 216, 160), (214, 182, 120)),
    "a desert": ((214, 150, 85), (176, 105, 55)),
    "a green field": ((110, 175, 70), (45, 115, 35)),
    "a snowy plain": ((246, 248, 252), (206, 216, 236)),
    "a lake": ((70, 150, 150), (30, 95, 105)),
    "a lavender field": ((170, 130, 210), (95, 60, 145)),
    "the sea": ((40, 90, 170), (15, 45, 110)),
    "a wheat field": ((232, 196, 96), (196, 150, 52)),
}


@dataclass(frozen=True)
class Light:
    sky_top: RGB
    sky_low: RGB  # the sky just above the horizon
    ground: RGB  # per-channel multiplier of the ground's daylight colours
    body: RGB  # the sun's (or the moon's, at night) colour


TIMES: dict[str, Light] = {
    "noon": Light((60, 130, 225), (165, 205, 240), (1.0, 1.0, 1.0), (255, 246, 205)),
    "golden hour": Light((95, 125, 200), (250, 195, 120), (1.0, 0.86, 0.66), (255, 218, 125)),
    "sunset": Light((70, 45, 120), (245, 110, 60), (0.78, 0.52, 0.42), (255, 160, 80)),
    "night": Light((8, 12, 40), (40, 55, 105), (0.36, 0.38, 0.55), (236, 236, 212)),
}
MOODS = {"vivid": 1.45, "neutral": 1.0, "muted": 0.45}  # saturation around each pixel's luminance
MOON = (236, 236, 212)
TREE_CROWN, TREE_TRUNK = (38, 95, 38), (62, 40, 22)
LOW, HIGH = 0.72, 0.28  # where "low horizon" and "high horizon" put it (the horizon's height from the top)
PLACEMENT_SPREAD = 0.05
FREE_HORIZON = (0.2, 0.8)  # the horizon's range when the prompt does not place it

# The words of each attribute, in the order a rich prompt names them (`prompt_of`).
WORDS: dict[str, dict[str, str]] = {
    "placement": {"low": "low horizon", "high": "high horizon"},
    "sky": {"clear": "clear sky", "clouds": "cloudy sky"},
    "body": {"sun": "the sun", "moon": "the moon"},
    "tree": {"left": "a lone tree on the left", "right": "a lone tree on the right"},
    "mood": {"vivid": "vivid colours", "muted": "muted colours"},
    "birds": {"yes": "birds in the sky"},
}
ATTRIBUTES = ("scene", "time", *WORDS)

# What the app's fields open with on the `toy` preset (presets.PAGE_DEFAULTS): prompts of the grammar, short where
# the tab is about making them rich.
PAGE_DEFAULTS = {
    "visual": "a beach at noon", "apply": "a desert at sunset, a lone tree on the left",
    "ask": "a green field, the sun",
    "ask_questions": "Does this image show a green field? Answer with Yes or No. | Yes",
    "lora": "a lake at night, the moon", "score": "a wheat field at golden hour, low horizon", "refine": "a beach",
    "self_improve": "a beach\na green field\na snowy plain\na lake\na desert\nthe sea",
}


def _pattern(words: str) -> re.Pattern:
    return re.compile(r"\b" + r"\s+".join(map(re.escape, words.split())) + r"\b")


_SCENE_RE = {name: _pattern(name.split(" ", 1)[1]) for name in SCENES}  # "beach", "green field", "sea"
_TIME_RE = {name: _pattern(name) for name in TIMES}
_WORD_RE = {(key, value): _pattern(text) for key, values in WORDS.items() for value, text in values.items()}


def parse(prompt: str) -> dict[str, str]:
    """The attributes a prompt names, e.g. {"scene": "a beach", "time": "sunset", "tree": "right"}. Unknown words are
    ignored; of two values of one attribute the first named wins."""
    text = " ".join(prompt.lower().replace("colors", "colours").split())
    found: dict[str, tuple[int, str]] = {}

    def note(key: str, value: str, match: re.Match | None) -> None:
        if match and (key not in found or match.start() < found[key][0]):
            found[key] = (match.start(), value)

    for name, pattern in _SCENE_RE.items():
        note("scene", name, pattern.search(text))
    for name, pattern in _TIME_RE.items():
        note("time", name, pattern.search(text))
    for (key, value), pattern in _WORD_RE.items():
        note(key, value, pattern.search(text))
    return {key: found[key][1] for key in ATTRIBUTES if key in found}


def phrase(key: str, value: str) -> str:
    """The grammar's words for one attribute: "a beach", "at sunset", "low horizon", "a lone tree on the left"."""
    return value if key == "scene" else f"at {value}" if key == "time" else WORDS[key][value]


def prompt_of(attributes: dict[str, str]) -> str:
    """The grammar's own wording of some attributes (the inverse of `parse`)."""
    head = attributes.get("scene", "a landscape") + (f" at {attributes['time']}" if "time" in attributes else "")
    rest = [WORDS[key][attributes[key]] for key in WORDS if key in attributes]
    return ", ".join([head, *rest])


# ---------- scenes ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """Everything `render` needs. Positions are fractions of the image (x from the left, y from the top)."""

    scene: str
    time: str
    horizon: float  # height of the horizon at the image's centre column
    tilt: float = 0.0  # degrees, right side up
    clouds: bool = False
    body: str | None = None  # "sun" or "moon"
    body_x: float = 0.5
    body_y: float = 0.2
    tree: str | None = None  # "left" or "right"
    tree_x: float = 0.2
    mood: str = "neutral"
    birds: bool = False
    seed: int = 0  # where the clouds and birds go, unless `shapes` says
    shapes: tuple[float, ...] = ()  # SHAPE_DRAWS numbers in [0, 1) that place the clouds and birds (see `layout`)

    def attributes(self) -> dict[str, str]:
        """What a complete prompt of this scene names."""
        out = {"scene": self.scene, "time": self.time, "sky": "clouds" if self.clouds else "clear"}
        if abs(self.horizon - LOW) <= PLACEMENT_SPREAD + 1e-9:
            out["placement"] = "low"
        elif abs(self.horizon - HIGH) <= PLACEMENT_SPREAD + 1e-9:
            out["placement"] = "high"
        if self.body:
            out["body"] = self.body
        if self.tree:
            out["tree"] = self.tree
        if self.mood != "neutral":
            out["mood"] = self.mood
        if self.birds:
            out["birds"] = "yes"
        return out

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def body_radius(body: str | None) -> float:
    return {"sun": 0.075, "moon": 0.07}.get(body or "", 0.0)


def sample(rng: np.random.Generator, named: dict[str, str] | None = None) -> Scene:
    """A scene with the `named` attributes (see `parse`); the others are drawn freely, so a short prompt ("a beach")
    covers every time, horizon height, sky and subject."""
    named = dict(named or {})
    scene = named.get("scene") or str(rng.choice(list(SCENES)))
    time = named.get("time") or str(rng.choice(list(TIMES)))
    placement = named.get("placement")
    if placement:
        horizon = (LOW if placement == "low" else HIGH) + rng.uniform(-PLACEMENT_SPREAD, PLACEMENT_SPREAD)
    else:
        horizon = rng.uniform(*FREE_HORIZON)
    tilt = 0.0 if rng.random() < 0.6 else rng.uniform(-4.0, 4.0)
    clouds = {"clear": False, "clouds": True}.get(named.get("sky", ""), rng.random() < 0.4)
    if "body" in named:
        body = named["body"]
    else:
        body = rng.choice([None, "moon"]) if time == "night" else rng.choice([None, "sun"], p=[0.55, 0.45])
    tree = named.get("tree") or rng.choice([None, "left", "right"], p=[0.6, 0.2, 0.2])
    mood = named.get("mood") or rng.choice(["neutral", "vivid", "muted"], p=[0.7, 0.15, 0.15])
    birds = named.get("birds") == "yes" or ("birds" not in named and rng.random() < 0.25)
    tree_x = rng.uniform(0.12, 0.3) if tree == "left" else rng.uniform(0.7, 0.88)
    r = body_radius(body)
    body_x = rng.uniform(0.15, 0.85)
    if tree:  # the sun or moon away from the tree, so that each reads as itself
        while abs(body_x - tree_x) < 0.22:
            body_x = rng.uniform(0.15, 0.85)
    low = max(r + 0.04, 0.35 * horizon)
    top = horizon - 1.1 * r - 0.02
    near = rng.random() < 0.3  # now and then the sun sits on the horizon (which the aesthetic rules dislike)
    body_y = horizon - r * rng.uniform(0.75, 1.05) if near else rng.uniform(min(low, top), max(low, top))
    return Scene(scene, time, float(horizon), float(tilt), bool(clouds), body and str(body), float(body_x),
                 float(body_y), tree and str(tree), float(tree_x), str(mood), bool(birds),
                 int(rng.integers(2**31)))


def sample_prompt(rng: np.random.Generator, rich: float = 0.5) -> tuple[str, Scene]:
    """A prompt of the grammar and a scene it describes: a scene alone, or with each attribute named with
    probability `rich`."""
    scene = sample(rng)
    attributes = scene.attributes()
    named = {"scene": attributes["scene"]} | {k: v for k, v in attributes.items()
                                               if k != "scene" and rng.random() < rich}
    return prompt_of(named), scene


# ---------- rendering ------------------------------------------------------------------------------------------------


def template(scene: str, time: str, mood: str = "neutral") -> np.ndarray:
    """The four reference colours of a (scene, time, mood): sky top, sky at the horizon, ground far, ground near."""
    light = TIMES[time]
    far, near = (np.asarray(c, float) * light.ground for c in SCENES[scene])
    colours = np.stack([np.asarray(light.sky_top, float), np.asarray(light.sky_low, float), far, near])
    return moody(colours, mood)


def moody(pixels: np.ndarray, mood: str) -> np.ndarray:
    """Saturation scaled around each pixel's luminance (the 'vivid' / 'muted colours' words)."""
    lum = pixels @ np.array([0.299, 0.587, 0.114])
    return np.clip(lum[..., None] + MOODS[mood] * (pixels - lum[..., None]), 0, 255)


def horizon_row(scene: Scene, x: np.ndarray, height: int) -> np.ndarray:
    """The horizon's row (float) at columns x (pixels) of a `height`-pixel image."""
    return scene.horizon * height - math.tan(math.radians(scene.tilt)) * (x - (height - 1) / 2)


SHAPE_DRAWS = 5  # cloud count, cloud x and y phases, bird x and y phases


def layout(scene: Scene) -> tuple[list[tuple[float, float, float]], list[tuple[float, float]]]:
    """Where the clouds (x, y, half-width) and birds (x, y) go: smooth functions of the scene's five shape draws, so
    that a generator can learn them from its noise; the draws come from `scene.seed` when `shapes` is empty."""
    d = np.asarray(scene.shapes if scene.shapes else np.random.default_rng(scene.seed).uniform(size=SHAPE_DRAWS))
    r = body_radius(scene.body)
    clouds = []
    if scene.clouds:
        count = 1 + min(2, int(3 * d[0]))
        lanes = np.linspace(0.06, max(0.1, scene.horizon - 0.1), count + 1)  # one cloud per band of rows
        for k in range(count):
            cx = 0.15 + 0.7 * ((d[1] + 0.37 * k) % 1)
            cy = lanes[k] + (lanes[k + 1] - lanes[k]) * ((d[2] + 0.53 * k) % 1)
            if scene.body and math.hypot(cx - scene.body_x, cy - scene.body_y) < r + 0.14:  # clear of the sun
                side = 1 if scene.body_x < 0.5 else -1
                cx = scene.body_x + side * (r + 0.15)
            clouds.append((float(cx), float(cy), 0.045 + 0.025 * float((d[1] + d[2] + 0.29 * k) % 1)))
    birds = []
    if scene.birds:
        for k in range(2 + int((d[3] + d[4]) % 1 < 0.5)):
            x = 0.15 + 0.7 * ((d[3] + 0.41 * k) % 1)
            y = 0.06 + (max(0.08, scene.horizon - 0.12) - 0.06) * ((d[4] + 0.23 * k) % 1)
            if scene.tree and abs(x - scene.tree_x) < 0.12:  # clear of the tree's crown
                x = scene.tree_x + (0.13 if scene.tree_x < 0.5 else -0.13)
            if scene.body and math.hypot(x - scene.body_x, y - scene.body_y) < r + 0.06:
                y = min(scene.body_y + r + 0.07, max(0.08, scene.horizon - 0.06))
            birds.append((float(x), float(y)))
    return clouds, birds


def render(scene: Scene, size: int = SIZE) -> Image.Image:
    """The scene painted at `size` px: flat gradients, anti-aliased shapes (drawn at twice the size, then averaged)."""
    big = 2 * size
    light = TIMES[scene.time]
    sky_top, sky_low = np.asarray(light.sky_top, float), np.asarray(light.sky_low, float)
    far, near = (np.asarray(c, float) * light.ground for c in SCENES[scene.scene])
    rows, cols = np.mgrid[0:big, 0:big].astype(float) + 0.5
    line = horizon_row(scene, cols, big)
    t_sky = np.clip(rows / np.maximum(line, 1), 0, 1)[..., None]
    t_ground = np.clip((rows - line) / np.maximum(big - line, 1), 0, 1)[..., None]
    image = np.where((rows < line)[..., None], sky_top + (sky_low - sky_top) * t_sky ** 1.5,
                     far + (near - far) * t_ground)
    clouds, birds = layout(scene)
    _clouds(image, scene, clouds, rows, cols, big)
    if scene.body:
        r, cy, cx = body_radius(scene.body) * big, scene.body_y * big, scene.body_x * big
        disk = (rows - cy) ** 2 + (cols - cx) ** 2 <= r ** 2
        if scene.body == "moon":  # a crescent: the disk less one shifted towards the upper right
            disk &= (rows - cy + 0.35 * r) ** 2 + (cols - cx - 0.55 * r) ** 2 > (0.85 * r) ** 2
        image[disk & (rows < line)] = MOON if scene.body == "moon" else light.body
    _birds(image, scene, birds, big)
    if scene.tree:
        _tree(image, scene, rows, cols, big)
    image = moody(image, scene.mood)
    small = image.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))
    return Image.fromarray(np.clip(small + 0.5, 0, 255).astype(np.uint8), "RGB")


def _clouds(image: np.ndarray, scene: Scene, clouds, rows, cols, big: int) -> None:
    colour = np.array((96, 100, 122) if scene.time == "night" else (248, 248, 250))
    if scene.time == "sunset":
        colour = np.array((250, 200, 190))
    for cx, cy, w in clouds:  # three overlapping ellipses each
        for dx, dy, k in ((-w, 0.01, 0.7), (0, -0.012, 1.0), (w, 0.01, 0.75)):
            ry, rx = 0.032 * k * big, (w * 1.1) * k * big
            inside = ((rows - (cy + dy) * big) / ry) ** 2 + ((cols - (cx + dx) * big) / rx) ** 2 <= 1
            image[inside & (rows < horizon_row(scene, cols, big) - 2)] = colour


def _birds(image: np.ndarray, scene: Scene, birds, big: int) -> None:
    colour = (200, 200, 210) if scene.time == "night" else (25, 25, 30)
    for x, y in birds:
        cx, cy, half = int(x * big), int(y * big), max(3, big // 40)
        for i in range(-half, half + 1):  # a 'v': two strokes, 2 px thick at twice the size
            r = cy + abs(i) // 2
            image[max(r - 1, 0):r + 1, max(cx + i, 0):cx + i + 1] = colour


def _tree(image: np.ndarray, scene: Scene, rows, cols, big: int) -> None:
    light = np.asarray(TIMES[scene.time].ground)
    x = scene.tree_x * big
    base = float(horizon_row(scene, np.array([x]), big)[0]) + 0.05 * big
    trunk_top, radius = base - 0.12 * big, 0.07 * big
    trunk = (np.abs(cols - x) <= 0.014 * big) & (rows <= base) & (rows >= trunk_top)
    crown = (rows - (trunk_top - 0.5 * radius)) ** 2 + (cols - x) ** 2 <= radius ** 2
    image[trunk] = np.asarray(TREE_TRUNK) * light
    image[crown] = np.asarray(TREE_CROWN) * light


# ---------- reading an image back --------------------------------------------------------------------------------


def as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """(H, W, 3) float pixels 0-255 of a PIL image or an array (uint8 or float 0-255)."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    return np.asarray(image, dtype=float)[..., :3]


def _fit_line(x: np.ndarray, y: np.ndarray, tol: float, rng: np.random.Generator) -> tuple[float, float]:
    """y = a + b x through most points (RANSAC over pairs, then least squares on the inliers): objects in front of the
    horizon (a tree, the sun on it) move a minority of columns' boundary, never the line."""
    best, best_count = (float(np.median(y)), 0.0), -1
    for _ in range(60):
        i, j = rng.choice(len(x), 2, replace=False)
        if x[i] == x[j]:
            continue
        b = (y[j] - y[i]) / (x[j] - x[i])
        if abs(b) > 0.2:  # steeper than ~11 degrees: not a horizon
            continue
        a = y[i] - b * x[i]
        count = int((np.abs(y - a - b * x) < tol).sum())
        if count > best_count:
            best, best_count = (a, b), count
    a, b = best
    inliers = np.abs(y - a - b * x) < tol
    if inliers.sum() >= 2:
        b, a = np.polyfit(x[inliers], y[inliers], 1)
    return float(a), float(b)


def horizon_of(image: Image.Image | np.ndarray) -> tuple[float, float]:
    """(height at the centre column as a fraction from the top, tilt in degrees, right side up).

    First the row where the scene's colour steps most between the six rows above and the six below, each row taken
    as the median over the columns (a cloud, the sun or a tree covers a minority of them); then, near that row, the
    strongest colour edge of each column, and a line through most of those."""
    pixels = as_array(image)
    h, w = pixels.shape[:2]
    medians = np.median(pixels, axis=1)
    window = max(2, h // 18)
    rows_ = np.arange(window, h - window)
    steps = [np.linalg.norm(medians[r - window:r].mean(0) - medians[r:r + window].mean(0)) for r in rows_]
    rough = int(rows_[int(np.argmax(steps))])
    smooth = ndimage.uniform_filter1d(pixels, 3, axis=1)
    step = np.linalg.norm(smooth[2:] - smooth[:-2], axis=2)  # edge strength between rows r and r + 2
    reach = int(0.09 * h)  # a 4 degree tilt moves the ends of the line by 7 % of the width
    lo, hi = max(0, rough - reach - 1), min(h - 2, rough + reach)
    rows = step[lo:hi].argmax(axis=0) + lo + 1.0  # the boundary sits between the two rows compared
    x = np.arange(w, dtype=float)
    a, b = _fit_line(x, rows, tol=1.6, rng=np.random.default_rng(0))
    centre = a + b * (w - 1) / 2
    return float(centre / h), float(math.degrees(math.atan(-b)))


def _region_colour(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.median(pixels[mask], axis=0) if mask.any() else np.zeros(3)


_TEMPLATES = [(s, t, m) for s in SCENES for t in TIMES for m in MOODS]
_TEMPLATE_LAB = np.stack([srgb_to_lab(template(s, t, m)) for s, t, m in _TEMPLATES])  # (N, 4, 3)


@dataclass
class Reading:
    """What an image shows, measured from its pixels."""

    scene: str
    time: str
    mood: str
    horizon: float
    tilt: float
    colour_distance: float  # mean Lab distance of the four region colours to the matched (scene, time, mood)
    body: str | None = None
    body_x: float | None = None
    body_y: float | None = None
    body_r: float | None = None
    tree: str | None = None
    tree_x: float | None = None
    clouds: bool = False
    birds: bool = False

    def attributes(self) -> dict[str, str]:
        out = {"scene": self.scene, "time": self.time, "sky": "clouds" if self.clouds else "clear"}
        if abs(self.horizon - LOW) <= 0.08:
            out["placement"] = "low"
        elif abs(self.horizon - HIGH) <= 0.08:
            out["placement"] = "high"
        for key in ("body", "tree"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.mood != "neutral":
            out["mood"] = self.mood
        if self.birds:
            out["birds"] = "yes"
        return out


def read(image: Image.Image | np.ndarray) -> Reading:
    """Measure everything the grammar can name (see `Reading`)."""
    pixels = as_array(image)
    h, w = pixels.shape[:2]
    y, tilt = horizon_of(pixels)
    rows, cols = np.mgrid[0:h, 0:w].astype(float)
    line = y * h - math.tan(math.radians(tilt)) * (cols - (w - 1) / 2)
    sky, ground = rows < line - 2, rows > line + 2
    regions = [sky & (rows < 0.12 * h), sky & (rows > line - 0.1 * h), ground & (rows < line + 0.08 * h),
               ground & (rows > h - 0.1 * h)]
    colours = np.stack([_region_colour(pixels, m) for m in regions])
    distance = np.linalg.norm(_TEMPLATE_LAB - srgb_to_lab(colours)[None], axis=2).mean(axis=1)
    best = int(distance.argmin())
    scene, time, mood = _TEMPLATES[best]
    reading = Reading(scene, time, mood, y, tilt, float(distance[best]))
    _read_sky(pixels, sky, line, reading)
    return reading


def _background(pixels: np.ndarray, sky: np.ndarray, ground: np.ndarray) -> np.ndarray:
    """The clean scene's colour at every pixel: the median colour of its row's sky pixels above the horizon and of its
    row's ground pixels below (a cloud, the sun or a tree covers under half of any row), carried on from the nearest
    row that has enough of them."""
    out = pixels.copy()
    for part in (sky, ground):
        rows = np.array([r for r in range(pixels.shape[0]) if part[r].sum() >= 4])
        if not len(rows):
            continue
        medians = np.stack([np.median(pixels[r][part[r]], axis=0) for r in rows])
        nearest = np.abs(np.arange(pixels.shape[0])[:, None] - rows[None]).argmin(axis=1)
        out[part] = np.broadcast_to(medians[nearest][:, None, :], pixels.shape)[part]
    return out


def _read_sky(pixels: np.ndarray, sky: np.ndarray, line: np.ndarray, reading: Reading) -> None:
    """Sun or moon, clouds, birds and a tree: connected regions that differ from the clean scene."""
    h, w = sky.shape
    rows = np.arange(h)[:, None]
    diff = pixels - _background(pixels, rows < line, rows >= line)
    lum = diff @ np.array([0.299, 0.587, 0.114])
    bright = sky & (lum > 22)
    # A tree: a region unlike the clean scene that crosses the horizon and stands at least a tenth of the height
    # (not "darker": at night its crown is lighter than the sky above it).
    labels, _ = ndimage.label(np.abs(diff).max(axis=2) > 24)
    for i, region in enumerate(ndimage.find_objects(labels), 1):
        ys, xs = region
        mask = labels[region] == i
        cols = np.arange(xs.start, xs.stop)
        crosses = ys.start < line[0, cols].min() - 2 and ys.stop > line[0, cols].max() + 2
        if crosses and (ys.stop - ys.start) >= 0.1 * h and 0.03 * w <= (xs.stop - xs.start) <= 0.3 * w \
                and mask.sum() >= 0.004 * h * w:
            x = (xs.start + xs.stop - 1) / 2 / w
            reading.tree, reading.tree_x = ("left" if x < 0.5 else "right"), float(x)
            break
    labels, _ = ndimage.label(bright)
    best_disk = 0.0
    for i, region in enumerate(ndimage.find_objects(labels), 1):
        ys, xs = region
        mask = labels[region] == i
        area, height, width = mask.sum(), ys.stop - ys.start, xs.stop - xs.start
        if area < 0.002 * h * w:
            continue
        fill, aspect = area / (height * width), width / height
        if aspect >= 1.45:
            reading.clouds = True
        elif area > best_disk and 0.15 < fill and 0.5 < aspect < 1.45 and height <= 0.22 * h:
            best_disk = area
            reading.body = "sun" if fill > 0.62 else "moon"
            reading.body_x = float((xs.start + xs.stop - 1) / 2 / w)
            reading.body_y = float((ys.start + ys.stop - 1) / 2 / h)
            reading.body_r = float(max(height, width) / 2 / h)
        else:
            reading.clouds = True
    labels, n = ndimage.label(sky & ((lum < -20) | ((lum > 60) & (reading.time == "night"))))
    sizes = ndimage.sum(np.ones_like(labels), labels, range(1, n + 1)) if n else []
    reading.birds = bool(sum(2 <= size <= 0.003 * h * w for size in sizes) >= 2)


def dominant_colours(image: Image.Image | np.ndarray, k: int = 5) -> list[tuple[int, int, int]]:
    """The image's k dominant colours (the palette control's own k-means in CIELAB), on a 56 px copy: the scenes are
    smooth, so the colours are the same and it is fast enough to label training images."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.rint(np.clip(as_array(image), 0, 255)).astype(np.uint8), "RGB")
    return extract_palette(image, k, max_side=56)


PALETTE_MATCH = 10.0  # an image "matches" a palette below this palette_distance (what the judge is taught)


def palette_distance(image: Image.Image | np.ndarray, colours) -> float:
    """Mean CIEDE2000 from each of the image's 5 dominant colours to the nearest palette colour (0: every dominant
    colour is in the palette)."""
    if not len(colours):
        raise ValueError("the palette is empty")
    dominant = srgb_to_lab(np.array(dominant_colours(image), dtype=np.float64))
    palette = srgb_to_lab(np.array(colours, dtype=np.float64))
    return float(ciede2000_lab(dominant[:, None], palette[None]).min(1).mean())


def scene_palette(scene: Scene, n: int = 6) -> list[tuple[int, int, int]]:
    """n colours along the scene's sky and ground gradients (half each): a palette the scene matches."""
    sky_top, sky_low, far, near = template(scene.scene, scene.time, scene.mood)
    out = []
    for (a, b), m in (((sky_top, sky_low), n // 2), ((far, near), n - n // 2)):
        for f in np.linspace(0, 1, m) if m > 1 else [0.5]:
            out.append(tuple(int(round(x + (y - x) * f)) for x, y in zip(a, b, strict=True)))
    return out


# ---------- scores -----------------------------------------------------------------------------------------------

# The median of `steering.high_frequency` (|luminance - its 3x3 average|: flat gradients give little, tiled textures
# and stripes a lot) over clean renders (tests/test_world.py checks it).
_CLEAN_HIGH_FREQUENCY = 0.66


def artefacts(image: Image.Image | np.ndarray) -> float:
    """High-frequency energy relative to clean renders of the world (1 = as clean as a render; a tiled texture is
    several times that)."""
    return high_frequency(image) / _CLEAN_HIGH_FREQUENCY


def present(reading: Reading, key: str, value: str) -> bool:
    """Whether an image (as read) shows one named attribute."""
    if key == "placement":
        return abs(reading.horizon - (LOW if value == "low" else HIGH)) <= 0.08
    return reading.attributes().get(key) == value or (key == "sky" and value == "clear" and not reading.clouds)


def alignment(prompt: str, image: Image.Image | np.ndarray | Reading) -> float:
    """The fraction of the prompt's named attributes the image shows (1.0 for a prompt that names nothing)."""
    named = parse(prompt)
    if not named:
        return 1.0
    reading = image if isinstance(image, Reading) else read(image)
    return sum(present(reading, k, v) for k, v in named.items()) / len(named)


def aesthetic_parts(image: Image.Image | np.ndarray) -> dict[str, float]:
    """The plain photographic rules behind `aesthetic`, each 0-1 (the artefact penalty 0 to -2)."""
    pixels = as_array(image)
    reading = read(pixels)
    third = min(abs(reading.horizon - 1 / 3), abs(reading.horizon - 2 / 3))
    subjects = [x for x in (reading.tree_x, reading.body_x) if x is not None]
    if not subjects:
        subject = 0.5
    else:
        subject = 1.0 if all(abs(x - 0.5) >= 0.15 for x in subjects) else 0.3
    if reading.body and reading.body_y is not None and reading.body_r is not None:
        gap = reading.horizon - reading.body_y - reading.body_r
        clear = float(np.clip(gap / reading.body_r, 0, 1))
    else:
        clear = 0.7
    lum = pixels @ np.array([0.299, 0.587, 0.114])
    spread = np.percentile(lum, 95) - np.percentile(lum, 5)
    return {"horizon on a third": float(np.clip(1 - third / 0.17, 0, 1)),
            "level horizon": float(np.clip(1 - abs(reading.tilt) / 4, 0, 1)),
            "subject off centre": subject, "sun clear of the horizon": clear,
            "contrast": float(np.clip(spread / 90, 0, 1)),
            "no texture": -2.0 * float(np.clip((artefacts(pixels) - 1.8) / 1.5, 0, 1))}


def aesthetic(image: Image.Image | np.ndarray) -> float:
    """The toy aesthetic, 0-5: the sum of `aesthetic_parts` (five rules worth one point each, less up to two for a
    tiled or striped texture)."""
    return float(np.clip(sum(aesthetic_parts(image).values()), 0, 5))


def preference(aesthetic: float, alignment: float) -> float:
    """The analytic preference for a prompt, 0-5: the mean of the judge's three rubric truths (aesthetic, 5 x
    alignment, and their mean for "preference"), which is 0.5 * aesthetic + 2.5 * alignment."""
    return 0.5 * aesthetic + 2.5 * alignment


def scores(image: Image.Image | np.ndarray, prompt: str) -> dict[str, float]:
    """An image's analytic aesthetic (0-5), alignment with `prompt` (0-1) and preference (0-5)."""
    a, al = aesthetic(image), alignment(prompt, image)
    return {"aesthetic": a, "alignment": al, "preference": preference(a, al)}


def with_attributes(scene: Scene, **changes: object) -> Scene:
    """The same scene with some fields changed (e.g. another horizon height)."""
    return replace(scene, **changes)
