"""The benchmark's own pieces that a wrong figure could hide behind: its photos and its batch histogram."""

from __future__ import annotations

import hashlib
import io

from PIL import Image

from bench.b2 import histogram, mean_batch
from bench.photos import HEIGHT, SIZE_RANGE, WIDTH, photo


def test_photos_are_distinct_jpegs_of_a_real_photos_size() -> None:
    made = [photo(seed) for seed in range(3)]
    assert len({hashlib.sha256(data).hexdigest() for data in made}) == 3
    for data in made:
        assert SIZE_RANGE[0] <= len(data) <= SIZE_RANGE[1]
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.size) == ("JPEG", (WIDTH, HEIGHT))


def test_the_same_seed_gives_the_same_photo() -> None:
    assert photo(7) == photo(7)


def test_histogram_lists_batch_sizes_largest_first_with_their_mean() -> None:
    assert histogram({8: 1, 16: 5}) == "16×5, 8×1 (mean 14.7)"
    assert mean_batch({}) == 0.0
    assert histogram({}) == "none"
