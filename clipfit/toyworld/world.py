"""The toy world: procedurally drawn RGB images of coloured shapes, and their captions.

An object has four attributes: a colour (10), a shape (8), a size (2) and a pattern (3).
:func:`draw` renders one at 32 px with numpy and PIL (drawn at 4x and downsampled, so
edges are anti-aliased) on a background chosen by a :class:`Style`: the pretraining
style is plain dark backgrounds; the downstream datasets use other styles (coloured
and textured backgrounds, clutter, noise, other sizes), a domain shift.

Sixteen colour-shape pairs (:data:`UNSEEN_PAIRS`, two per shape, one or two per colour)
are never drawn nor captioned in pretraining, so a downstream class made of one of them
is new to the model in the strong sense.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw
from clipfit.errors import ConfigValueError

IMAGE_SIZE = 32
SUPERSAMPLE = 4

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (245, 225, 30),
    "orange": (250, 130, 10),
    "purple": (135, 40, 190),
    "pink": (255, 130, 200),
    "brown": (125, 75, 25),
    "cyan": (30, 215, 225),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond", "ring", "crescent")
SIZES = ("small", "large")
PATTERNS = ("solid", "striped", "dotted")
SIZE_RANGE = {"small": (0.34, 0.46), "large": (0.62, 0.80)}  # object extent / image size

# colour-shape pairs never drawn in pretraining: (colour index + 2 * shape index) % 5 == 0
UNSEEN_PAIRS = tuple(
    (c, s) for s in SHAPES for c in COLOURS if (list(COLOURS).index(c) + 2 * SHAPES.index(s)) % 5 == 0
)

CAPTION_TEMPLATES = (
    "a photo of a {}.",
    "a {}.",
    "an image of a {}.",
    "a picture of a {}.",
    "a drawing of a {}.",
    "there is a {} in the picture.",
    "a {} on a dark background.",
)


@dataclass(frozen=True)
class Thing:
    """One object: its colour, shape, size and pattern names."""

    colour: str
    shape: str
    size: str = "large"
    pattern: str = "solid"


@dataclass
class Style:
    """How a scene is drawn around the object (the domain)."""

    background: str = "dark"  # dark (grey), colour (any), gradient
    noise: float = 6.0  # std of per-pixel Gaussian noise, 0-255 scale
    clutter: int = 0  # up to this many small grey distractors
    size_scale: Tuple[float, float] = (1.0, 1.0)  # extra random scale of the object
    max_rotation: float = 12.0  # degrees
    jitter: float = 0.12  # max centre offset / image size
    gain: Tuple[float, float, float] = (1.0, 1.0, 1.0)  # colour cast of the whole image (lighting,
    offset: Tuple[float, float, float] = (0.0, 0.0, 0.0)  # camera): pixel * gain + offset, per channel


PRETRAIN_STYLE = Style()


def seen_pairs() -> List[Tuple[str, str]]:
    """The colour-shape pairs drawn and captioned in pretraining."""
    unseen = set(UNSEEN_PAIRS)
    return [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in unseen]


def _star(n: int, inner: float) -> List[Tuple[float, float]]:
    radii = [1.0 if k % 2 == 0 else inner for k in range(2 * n)]
    return [(r * math.sin(math.pi * k / n), -r * math.cos(math.pi * k / n)) for k, r in enumerate(radii)]


_POLYGONS = {
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": [(0.0, -1.0), (0.95, 0.75), (-0.95, 0.75)],
    "star": _star(5, 0.42),
    "cross": [
        (-0.3, -1.0), (0.3, -1.0), (0.3, -0.3), (1.0, -0.3), (1.0, 0.3), (0.3, 0.3),
        (0.3, 1.0), (-0.3, 1.0), (-0.3, 0.3), (-1.0, 0.3), (-1.0, -0.3), (-0.3, -0.3),
    ],
    "diamond": [(0.0, -1.0), (0.8, 0.0), (0.0, 1.0), (-0.8, 0.0)],
}


def shape_mask(shape: str, centre: Tuple[float, float], radius: float, angle: float, size: int) -> Image.Image:
    """An anti-aliasing-ready binary mask (mode L, ``size`` px) of ``shape``."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = centre

    def circle(x: float, y: float, r: float, fill: int) -> None:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)

    if shape == "circle":
        circle(cx, cy, radius, 255)
    elif shape == "ring":
        circle(cx, cy, radius, 255)
        circle(cx, cy, radius * 0.55, 0)
    elif shape == "crescent":
        circle(cx, cy, radius, 255)
        dx, dy = 0.45 * radius * math.cos(angle), 0.45 * radius * math.sin(angle)
        circle(cx + dx, cy + dy, radius * 0.85, 0)
    else:
        cos, sin = math.cos(angle), math.sin(angle)
        points = [(cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos)) for x, y in _POLYGONS[shape]]
        draw.polygon(points, fill=255)
    return mask


def _fill(colour: Tuple[int, int, int], pattern: str, size: int, rng: random.Random) -> np.ndarray:
    """The object's paint (``size`` x ``size`` x 3 float): solid, striped or dotted."""
    rgb = np.array(colour, dtype=np.float32)
    dark = rgb * 0.3
    paint = np.empty((size, size, 3), np.float32)
    paint[:] = rgb
    if pattern == "solid":
        return paint
    period = 4 * SUPERSAMPLE
    yy, xx = np.mgrid[0:size, 0:size]
    phase = rng.randrange(period)
    if pattern == "striped":
        diagonal = rng.random() < 0.5
        coord = (xx + yy) if diagonal else yy
        off = ((coord + phase) % period) >= period // 2
    else:  # dotted: bright dots on the dark shade
        dx, dy = (xx + phase) % period - period / 2, (yy + phase) % period - period / 2
        off = dx * dx + dy * dy > (period * 0.3) ** 2
    paint[off] = dark
    return paint


def _background(style: Style, rng: random.Random, nrng: np.random.Generator, size: int) -> np.ndarray:
    if style.background == "dark":
        level = rng.uniform(15, 80)
        tint = np.array([rng.uniform(-8, 8) for _ in range(3)], np.float32)
        return np.broadcast_to(level + tint, (size, size, 3)).astype(np.float32)
    a = np.array([rng.uniform(0, 255) for _ in range(3)], np.float32)
    if style.background == "colour":
        return np.broadcast_to(a, (size, size, 3)).astype(np.float32)
    if style.background == "gradient":
        b = np.array([rng.uniform(0, 255) for _ in range(3)], np.float32)
        t = np.linspace(0, 1, size, dtype=np.float32)
        theta = rng.uniform(0, 2 * math.pi)
        ramp = (math.cos(theta) * t[None, :] + math.sin(theta) * t[:, None]) / 1.5 + 0.5
        return a + (b - a) * np.clip(ramp, 0, 1)[..., None]
    raise ConfigValueError(f"unknown background {style.background!r}: use dark, colour or gradient")


def draw(
    thing: Thing, style: Style = PRETRAIN_STYLE, seed: Optional[int] = None, rng: Optional[random.Random] = None
) -> Image.Image:
    """A 32 px RGB image of ``thing`` in ``style``; the same seed draws the same image."""
    for name, value, known in (("colour", thing.colour, COLOURS), ("shape", thing.shape, SHAPES),
                               ("size", thing.size, SIZES), ("pattern", thing.pattern, PATTERNS)):
        if value not in known:
            raise ConfigValueError(f"unknown {name} {value!r}; known: {', '.join(known)}")
    rng = rng or random.Random(seed)
    nrng = np.random.default_rng(rng.randrange(2**32))
    big = IMAGE_SIZE * SUPERSAMPLE
    canvas = _background(style, rng, nrng, big).copy()
    for _ in range(rng.randint(0, style.clutter) if style.clutter else 0):
        grey = rng.uniform(60, 200)
        r = rng.uniform(0.06, 0.12) * big
        x, y = rng.uniform(r, big - r), rng.uniform(r, big - r)
        m = np.asarray(shape_mask(rng.choice(("square", "circle")), (x, y), r, 0.0, big), np.float32)[..., None] / 255
        canvas = canvas * (1 - m) + grey * m
    extent = rng.uniform(*SIZE_RANGE[thing.size]) * rng.uniform(*style.size_scale)
    radius = 0.5 * extent * big
    jitter = style.jitter * big
    centre = (big / 2 + rng.uniform(-jitter, jitter), big / 2 + rng.uniform(-jitter, jitter))
    angle = math.radians(rng.uniform(-style.max_rotation, style.max_rotation))
    if thing.shape == "crescent":
        angle += rng.uniform(0, 2 * math.pi)
    mask = np.asarray(shape_mask(thing.shape, centre, radius, angle, big), np.float32)[..., None] / 255
    canvas = canvas * (1 - mask) + _fill(COLOURS[thing.colour], thing.pattern, big, rng) * mask
    small = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)
    pixels = np.asarray(small, np.float32) * np.array(style.gain, np.float32) + np.array(style.offset, np.float32)
    if style.noise:
        pixels = pixels + nrng.normal(0, style.noise, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def describe(thing: Thing, with_size: bool, with_pattern: bool) -> str:
    """The noun phrase for ``thing``, e.g. "large striped red star"."""
    words = ([thing.size] if with_size else []) + ([thing.pattern] if with_pattern else [])
    return " ".join(words + [thing.colour, thing.shape])


def caption(
    thing: Thing, rng: random.Random, p_size: float = 0.3, p_pattern: float = 0.3
) -> Tuple[str, Tuple[bool, bool]]:
    """A random caption of ``thing`` and which of (size, pattern) it mentions."""
    mentions = (rng.random() < p_size, rng.random() < p_pattern)
    return rng.choice(CAPTION_TEMPLATES).format(describe(thing, *mentions)), mentions


def random_thing(rng: random.Random, pairs: Sequence[Tuple[str, str]]) -> Thing:
    """A thing of a random pair of ``pairs`` with random size and pattern."""
    colour, shape = rng.choice(pairs)
    return Thing(colour, shape, rng.choice(SIZES), rng.choice(PATTERNS))


@dataclass
class CaptionedBatch:
    """Pretraining pairs: images, captions, and the attributes each caption states."""

    images: List[Image.Image] = field(default_factory=list)
    captions: List[str] = field(default_factory=list)
    things: List[Thing] = field(default_factory=list)
    mentions: List[Tuple[bool, bool]] = field(default_factory=list)

    def positives(self) -> np.ndarray:
        """``[i, j]`` True when caption ``j`` is true of image ``i`` (several per row)."""
        n = len(self.things)
        out = np.zeros((n, n), bool)
        for i, a in enumerate(self.things):
            for j, (b, (size, pattern)) in enumerate(zip(self.things, self.mentions)):
                out[i, j] = (a.colour, a.shape) == (b.colour, b.shape) and (not size or a.size == b.size) and (
                    not pattern or a.pattern == b.pattern
                )
        return out


def captioned_batch(rng: random.Random, n: int, style: Style = PRETRAIN_STYLE) -> CaptionedBatch:
    """``n`` random pretraining pairs of seen colour-shape pairs."""
    pairs = seen_pairs()
    batch = CaptionedBatch()
    for _ in range(n):
        thing = random_thing(rng, pairs)
        text, mentions = caption(thing, rng)
        batch.images.append(draw(thing, style, rng=rng))
        batch.captions.append(text)
        batch.things.append(thing)
        batch.mentions.append(mentions)
    return batch
