"""Distinct, photo-like JPEGs of realistic size for the benchmarks (no photo data set is offline).

Each photo is a seeded mix of smooth noise at several scales, a colour gradient, a few soft shapes
and fine grain, at 1024x768, JPEG quality 92: a few hundred KB, like a phone photo resized for the
web. Every seed gives a different photo, so no cache or content addressing can serve one job's
image for another's.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 1024, 768
QUALITY = 92
SIZE_RANGE = (150_000, 500_000)  # bytes: what a real photo of this size weighs as a JPEG


def photo(seed: int) -> bytes:
    """The JPEG bytes of photo number `seed` (the same bytes for the same seed)."""
    rng = np.random.default_rng(seed)
    pixels = _gradient(rng) + _smooth_noise(rng)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    image = _shapes(image, rng)
    grain = rng.normal(0, 6, (HEIGHT, WIDTH, 3))  # sensor noise: what makes real JPEGs weigh
    pixels = np.asarray(image, dtype=np.float32) + grain
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=QUALITY)
    return buffer.getvalue()


def photos(count: int, folder: Path, *, first_seed: int = 0) -> list[Path]:
    """`count` distinct photos as files in `folder`, made once and kept (making one takes ~0.1 s)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(first_seed, first_seed + count):
        path = folder / f"photo-{seed:05d}.jpg"
        if not path.exists():
            path.write_bytes(photo(seed))
        paths.append(path)
    return paths


def _gradient(rng: np.random.Generator) -> np.ndarray:
    """A sky-to-ground colour ramp at a random angle: two random colours blended across the frame."""
    top, bottom = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    angle = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    t = (np.cos(angle) * ys / HEIGHT + np.sin(angle) * xs / WIDTH)
    t = (t - t.min()) / (t.max() - t.min())
    return top * (1 - t[..., None]) + bottom * t[..., None]


def _smooth_noise(rng: np.random.Generator) -> np.ndarray:
    """Texture at several scales (coarse blobs to fine detail), each a small random grid upscaled."""
    total = np.zeros((HEIGHT, WIDTH, 3), dtype=np.float32)
    for cells, amplitude in ((4, 60.0), (16, 30.0), (64, 18.0), (256, 10.0)):
        grid = rng.uniform(-1, 1, (cells * 3 // 4 + 1, cells + 1, 3)).astype(np.float32)
        layers = [np.asarray(Image.fromarray(grid[..., c]).resize((WIDTH, HEIGHT), Image.BICUBIC))
                  for c in range(3)]
        total += amplitude * np.stack(layers, axis=-1)
    return total


def _shapes(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A few soft-edged ellipses and rectangles: objects with edges, as in a scene."""
    overlay = image.copy()
    draw = ImageDraw.Draw(overlay)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = rng.integers(0, WIDTH - 64), rng.integers(0, HEIGHT - 64)
        box = (int(x0), int(y0), int(x0 + rng.integers(40, 400)), int(y0 + rng.integers(40, 300)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return Image.blend(image, overlay.filter(ImageFilter.GaussianBlur(2)), 0.7)
