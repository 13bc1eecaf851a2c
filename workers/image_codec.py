"""Image bytes in and out of worker code: decode untrusted uploads safely, encode outputs stably.

Inputs come from users, so decoding refuses what Pillow would otherwise half-accept: bytes that
are not an image, truncated files (which Pillow can be told to pad with grey) and decompression
bombs (a few kilobytes of PNG that claim billions of pixels).

Every still-image format Pillow decodes is accepted (PNG, JPEG, GIF, BMP, TIFF, WebP, AVIF,
JPEG 2000, ICO, PNM, PSD, QOI, DDS, TGA, …). A file of several frames (a multi-page TIFF, an
animated GIF or WebP) gives its first; 16-bit and floating-point pixels (scanners, microscopes)
are scaled to 8 bits; a format Pillow does not decode (HEIC, SVG) is refused by name.
"""

from __future__ import annotations

import io
import logging
import re
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from mmq.tasks.errors import InvalidInput
from mmq.tasks.media_types import extension_for, sniff_media_type

logger = logging.getLogger(__name__)

# What Pillow raises for unreadable, truncated or corrupt data, across its format plugins.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)


def decode_image(data: bytes, *, field: str, max_pixels: int) -> Image.Image:
    """An RGB image, fully decoded; `InvalidInput` naming `field` if `data` is not a safe image."""
    _refuse_truncated_images()
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own default limit; ours (checked next) is the one that counts.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        # Pillow refuses very large headers itself, before we can read the size.
        raise InvalidInput(f"{field}: {_bomb_size(e)} is over the limit of {max_pixels}", field=field) from None
    except UnidentifiedImageError:
        raise InvalidInput(f"{field}: {_unreadable(data)}", field=field) from None
    except _DECODE_ERRORS as e:
        raise InvalidInput(f"{field}: not a decodable image ({e})", field=field) from None
    _check_size(image, field=field, max_pixels=max_pixels)
    return _load_rgb(image, field=field)


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes; Pillow writes no timestamp, so equal images give equal bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _refuse_truncated_images() -> None:
    # A process-wide Pillow switch that some libraries turn on; with it, a cut-off upload decodes
    # "successfully" with a grey bottom half. Workers must reject such input, so turn it back off.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        logger.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES was on; turning it off")
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def _unreadable(data: bytes) -> str:
    """Why Pillow could not open it. (Its own message names a BytesIO object's address, which
    helps nobody.)"""
    media_type = sniff_media_type(data) if data else ""
    if media_type.startswith("image/"):
        return (f"{extension_for(media_type).upper()} ({media_type}) is an image format this worker does not "
                f"decode; convert it to PNG or JPEG")
    if not data:
        return "not a decodable image (no data)"
    if media_type != "application/octet-stream":  # another kind of file (declared an image, maybe): say which
        return f"not a decodable image: its content is {media_type} ({len(data)} bytes)"
    return f"not a decodable image ({len(data)} bytes in no image format Pillow reads, starting {data[:8]!r})"


def _bomb_size(error: Image.DecompressionBombError) -> str:
    # Pillow's message is the only place that holds the size; keep all of it if its wording changes.
    match = re.search(r"\((\d+) pixels\)", str(error))
    return f"{match.group(1)} pixels" if match else f"the image size ({error})"


def _check_size(image: Image.Image, *, field: str, max_pixels: int) -> None:
    # Only the header has been read so far: refuse before any pixel memory is allocated.
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidInput(
            f"{field}: {width}x{height} pixels is over the limit of {max_pixels}", field=field
        )


def _load_rgb(image: Image.Image, *, field: str) -> Image.Image:
    try:
        image.seek(0)  # the first frame of a multi-page or animated file (where Image.open leaves it)
        image.load()  # decode every pixel now, so truncation fails here and not in the model
        image = ImageOps.exif_transpose(image)  # camera photos: show them the way viewers do
        return _eight_bit(image).convert("RGB")
    except _DECODE_ERRORS as e:
        raise InvalidInput(f"{field}: not a decodable image ({e})", field=field) from None


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer or float grey (Pillow's I;16*, I, F modes) scaled into 0-255:
    converted as they are, every value above 255 would be white."""
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    pixels = np.asarray(image, dtype=np.float64)
    low, high = float(pixels.min()), float(pixels.max())
    if image.mode.startswith("I;16"):
        low, high = 0.0, 65535.0  # the format's range, as viewers show it
    elif high <= 255 and low >= 0:
        low, high = 0.0, 255.0
    scaled = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
