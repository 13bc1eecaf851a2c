"""Every still-image format Pillow decodes is an image input; a file of several frames gives its
first; a format Pillow cannot decode is refused by name. Real caption, diffusion and features
workers (tiny models: the hub is unreachable here)."""

import io

import numpy as np
import pytest
from PIL import Image

from mmq.tasks import JobStatus
from tests.outcomes import finished


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo(size=(96, 64), colour=(200, 120, 40)) -> Image.Image:
    return Image.new("RGB", size, colour)


@pytest.mark.parametrize("fmt", ["TIFF", "WEBP", "AVIF", "JPEG2000", "ICO", "PPM", "QOI", "TGA", "BMP"])
def test_a_photo_in_any_format_pillow_decodes_is_captioned(client, tmp_path, fmt):
    path = tmp_path / f"photo.{fmt.lower()}"
    path.write_bytes(encoded(photo(), fmt))
    record = finished(client.submit("caption", image=path, max_new_tokens=5))
    assert isinstance(record.outputs["text"], str)


def test_a_16_bit_tiff_is_scaled_not_clipped_to_white(client, tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 15).astype(np.uint16)  # 0 to 61425
    path = tmp_path / "microscope.tif"
    path.write_bytes(encoded(Image.fromarray(ramp), "TIFF"))
    job = client.submit("image2image", image=path, prompt="the same, sharper", strength=0.01, steps=100)
    assert finished(job).status is JobStatus.SUCCEEDED
    # Barely redrawn (strength 0.01): the output keeps the ramp's dark-to-light range.
    out = np.asarray(Image.open(io.BytesIO(job.outputs["image"].read())).convert("L"), dtype=float)
    assert out.min() < 64 and out.max() > 191


def test_a_multi_page_tiff_gives_its_first_page(client, tmp_path):
    path = tmp_path / "scan.tif"
    path.write_bytes(encoded(photo((96, 64)), "TIFF", save_all=True, append_images=[photo((48, 40))]))
    job = client.submit("image2image", image=path, prompt="the same in winter", strength=0.5, steps=4)
    assert finished(job).status is JobStatus.SUCCEEDED
    assert Image.open(io.BytesIO(job.outputs["image"].read())).size == (96, 64)  # page 1's size, not page 2's


def test_an_animated_gif_gives_its_first_frame(serve, tmp_path):
    client = serve("features").client()
    red, blue = photo(colour=(220, 30, 30)), photo(colour=(30, 30, 220))
    frames = {"animated.gif": encoded(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0),
              "first.png": encoded(red, "PNG"), "second.png": encoded(blue, "PNG")}
    for name, data in frames.items():
        (tmp_path / name).write_bytes(data)
    record = finished(client.submit("features", images=[tmp_path / n for n in frames]))
    gif, first, second = (np.asarray(row) for row in record.outputs["embeddings"])
    assert np.allclose(gif, first, atol=1e-5) and not np.allclose(gif, second, atol=1e-3)
    client.close()


def test_a_format_pillow_cannot_decode_is_refused_by_name(client, tmp_path):
    path = tmp_path / "phone.heic"  # an iPhone photo's container; Pillow has no HEIC decoder
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200))
    record = finished(client.submit("caption", image=path), JobStatus.FAILED)
    assert record.error["type"] == "InvalidInput"
    assert record.error["message"] == ("image: HEIC (image/heic) is an image format this worker does not decode; "
                                       "convert it to PNG or JPEG")
    assert finished(client.submit("caption", image=encoded(photo(), "PNG"))).status is JobStatus.SUCCEEDED
