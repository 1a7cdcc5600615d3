"""IMAGE_CACHE_MAX_BYTES: the shared image cache stays under its cap, evicting least recently used files."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from backend.config import Settings
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.image_cache import LOW_WATER, STALE_TMP_S, ImageCache


def _age(cache: ImageCache, reference: str, seconds_ago: float) -> None:
    stamp = time.time() - seconds_ago
    os.utime(cache.path_for(reference), (stamp, stamp))


def test_put_over_the_cap_evicts_the_least_recently_used(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path, max_bytes=1000)
    for index in range(4):
        cache.put(f"img-{index}", bytes(200))
        _age(cache, f"img-{index}", 100 - index)  # img-0 oldest
    assert cache.get("img-0") == bytes(200)  # a hit makes img-0 the most recently used
    cache.put("img-4", bytes(200))  # 1000 bytes: at the cap, nothing evicted
    assert cache.size_bytes() == 1000
    cache.put("img-5", bytes(200))  # over the cap: down to 90 % (900) -> the two oldest go
    assert cache.size_bytes() <= 1000 * LOW_WATER
    assert cache.get("img-1") is None and cache.get("img-2") is None
    assert cache.get("img-0") == bytes(200) and cache.get("img-5") == bytes(200)


def test_larger_than_the_cap_is_not_stored_and_zero_means_no_cap(tmp_path: Path) -> None:
    bounded = ImageCache(tmp_path / "a", max_bytes=100)
    bounded.put("big", bytes(101))
    assert bounded.get("big") is None
    unbounded = ImageCache(tmp_path / "b", max_bytes=0)
    for index in range(20):
        unbounded.put(f"img-{index}", bytes(100))
    assert unbounded.size_bytes() == 2000
    assert unbounded.sweep() == 0


def test_sweep_removes_stale_temp_files_of_a_killed_writer(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path, max_bytes=10_000)
    cache.put("img", bytes(10))
    shard = cache.path_for("img").parent
    stale, fresh = shard / ".tmp-stale", shard / ".tmp-fresh"
    stale.write_bytes(bytes(50))
    fresh.write_bytes(bytes(50))
    old = time.time() - STALE_TMP_S - 10
    os.utime(stale, (old, old))
    assert cache.size_bytes() == 10  # temp files do not count, the stale one is gone
    assert not stale.exists() and fresh.exists()


def test_sweep_is_skipped_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    import fcntl

    cache = ImageCache(tmp_path, max_bytes=100)
    for index in range(5):
        (cache.path_for(f"img-{index}").parent).mkdir(parents=True, exist_ok=True)
        cache.path_for(f"img-{index}").write_bytes(bytes(50))
    with open(tmp_path / ".sweep.lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        assert cache.sweep() == 0
    assert cache.sweep() > 0 and cache.size_bytes() <= 100 * LOW_WATER


def _writer(root: str, worker: int) -> None:
    cache = ImageCache(Path(root), max_bytes=20_000)
    for index in range(200):
        cache.put(f"w{worker}-{index}", os.urandom(500))


def test_concurrent_processes_keep_the_shared_cache_bounded(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_writer, args=(str(tmp_path), worker)) for worker in range(3)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(60)
        assert process.exitcode == 0
    cache = ImageCache(tmp_path, max_bytes=20_000)
    # each process sweeps after writing 1/64 of the cap, so at most a few files over the cap remain
    assert cache.size_bytes() <= 20_000 + 3 * 500
    cache.sweep()
    assert cache.size_bytes() <= 20_000
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != ".sweep.lock":
            assert path.stat().st_size == 500, f"{path} is a partial write"


def test_the_client_cache_uses_the_setting(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, image_cache_max_bytes=12345)
    with LabelStudioClient(settings) as client:
        assert client._cache is not None and client._cache.max_bytes == 12345
    assert Settings().image_cache_max_bytes == 2 * 1024**3
