"""The benchmark's own pieces that a wrong figure could hide behind: its photos and its batch histogram."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from bench.b2 import _turns, b2_peers, histogram, mean_batch
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


class _Recorder:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def run(self, paths) -> dict:
        self.log.append(self.name)
        return {"run": paths}


def test_sides_take_turns_in_a_new_order_each_run_and_the_warm_up_is_dropped() -> None:
    log: list[str] = []
    results = _turns({"mmq": _Recorder("mmq", log), "direct": _Recorder("direct", log)}, [["w"], ["a"], ["b"]])
    assert log == ["mmq", "direct", "direct", "mmq", "mmq", "direct"]
    assert results == {"mmq": [{"run": ["a"]}, {"run": ["b"]}], "direct": [{"run": ["a"]}, {"run": ["b"]}]}


def test_the_peers_are_the_direct_loop_and_ray_unless_told(monkeypatch) -> None:
    monkeypatch.delenv("MMQ_BENCH_B2_PEERS", raising=False)
    assert b2_peers() == ("direct", "ray")
    monkeypatch.setenv("MMQ_BENCH_B2_PEERS", "direct")
    assert b2_peers() == ("direct",)
    for wrong in ("ray", "direct,bento"):
        monkeypatch.setenv("MMQ_BENCH_B2_PEERS", wrong)
        with pytest.raises(SystemExit, match="MMQ_BENCH_B2_PEERS"):
            b2_peers()
