"""Parallel range downloads against a local server: ranges or not, corrupt bytes, drops, limits, errors."""

from __future__ import annotations

import hashlib
import logging
import threading

import pytest

from remixer import download
from remixer.download import DownloadError, Job, Settings
from remixer.testing.file_server import Behaviour, FileServer

PAYLOAD = bytes((i * 7919) % 251 for i in range(3 << 20))  # 3 MiB, no repeating 256-byte period
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
SMALL_CHUNKS = Settings(connections=4, chunk_bytes=256 << 10, retries=3, timeout_s=5)


@pytest.fixture
def served():
    server = FileServer(Behaviour(payload=PAYLOAD))
    yield server
    server.close()


def _job(server, tmp_path, name="model.bin", **kwargs) -> Job:
    return Job(f"{server.url}/{name}", tmp_path / name, **{"sha256": DIGEST, **kwargs})


def test_parallel_ranges_give_the_exact_file_and_leave_nothing_behind(tmp_path):
    # Each range takes ~30 ms (8 MB/s per connection), so ranges overlap however fast the machine is.
    served = FileServer(Behaviour(payload=PAYLOAD, rate=8 << 20))
    try:
        (path,) = download.fetch_all([_job(served, tmp_path)], SMALL_CHUNKS)
    finally:
        served.close()
    assert path.read_bytes() == PAYLOAD
    ranges = [r for r in served.behaviour.requests if r and r != "bytes=0-0"]
    assert len(ranges) == 12 and all(r.startswith("bytes=") and not r.endswith("-") for r in ranges)
    assert served.behaviour.peak > 1  # several ranges were in flight at once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]  # no .part, no state file


def test_server_without_ranges_gets_one_stream(tmp_path):
    server = FileServer(Behaviour(payload=PAYLOAD, ranges=False))
    try:
        (path,) = download.fetch_all([_job(server, tmp_path)], SMALL_CHUNKS)
        assert path.read_bytes() == PAYLOAD
        assert len(server.behaviour.requests) == 2  # the probe (answered 200) and the one stream
        assert server.behaviour.peak == 1
    finally:
        server.close()


def test_corrupt_bytes_are_caught_by_the_checksum_and_fetched_again(served, tmp_path, caplog):
    served.behaviour.corrupt_left = 2  # the probe's byte and one range
    with caplog.at_level(logging.WARNING):
        (path,) = download.fetch_all([_job(served, tmp_path)], SMALL_CHUNKS)
    assert path.read_bytes() == PAYLOAD
    assert "checksum mismatch" in caplog.text and "fetching it again" in caplog.text


def test_a_dropped_range_is_retried_on_its_own(served, tmp_path):
    served.behaviour.drop_after, served.behaviour.drops_left = 10_000, 2
    (path,) = download.fetch_all([_job(served, tmp_path)], SMALL_CHUNKS)
    assert path.read_bytes() == PAYLOAD
    # 12 ranges plus the 2 dropped ones retried: nothing else fetched again.
    assert len([r for r in served.behaviour.requests if r != "bytes=0-0"]) == 14


def test_several_files_at_once_stay_within_the_connection_limit(served, tmp_path, monkeypatch):
    served.behaviour.rate = 4 << 20  # slow enough for the transfers to overlap
    jobs = [_job(served, tmp_path, f"file{i}.bin") for i in range(3)]
    totals = []
    in_flight = {"now": 0, "peak": 0}
    lock = threading.Lock()
    real = download._fetch_range

    def counted(*args, **kwargs):  # requests in flight, counted where they are made
        with lock:
            in_flight["now"] += 1
            in_flight["peak"] = max(in_flight["peak"], in_flight["now"])
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                in_flight["now"] -= 1

    monkeypatch.setattr(download, "_fetch_range", counted)

    class Bar:
        def __init__(self, total):
            totals.append(total)
            self.n = 0

        def update(self, count):
            self.n += count

        def close(self):
            totals.append(self.n)

    paths = download.fetch_all(jobs, Settings(connections=3, chunk_bytes=512 << 10), Bar)
    assert all(p.read_bytes() == PAYLOAD for p in paths)
    assert in_flight["peak"] == 3  # the limit was used, never exceeded, across the three files
    assert totals == [3 * len(PAYLOAD), 3 * len(PAYLOAD)]  # one bar for the whole set, ending full


def test_missing_file_and_timeout_name_the_file_and_url(served, tmp_path):
    with pytest.raises(DownloadError, match=rf"model.bin from {served.url}/missing: HTTP 404"):
        download.fetch_all([Job(f"{served.url}/missing", tmp_path / "model.bin")], SMALL_CHUNKS)
    served.behaviour.stall_s = 2.0
    with pytest.raises(DownloadError, match=rf"model.bin from {served.url}/model.bin: .*timed out"):
        download.fetch_all([_job(served, tmp_path)], Settings(timeout_s=0.3))


def test_a_wrong_size_or_checksum_that_persists_is_an_error_and_nothing_is_kept(served, tmp_path):
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download.fetch_all([_job(served, tmp_path, sha256="ab" * 32)], SMALL_CHUNKS)
    with pytest.raises(DownloadError, match="downloaded 3145728 bytes, expected 123"):
        download.fetch_all([_job(served, tmp_path, size=123)], SMALL_CHUNKS)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("checksum", [True, False])
def test_a_range_of_several_reads_is_written_byte_for_byte_at_its_offset(tmp_path, checksum):
    """Ranges longer than one read (1 MiB): 2 MiB + 5 bytes, then the rest; every byte where it belongs,
    also without a checksum to catch a misplaced read."""
    served = FileServer(Behaviour(payload=PAYLOAD))
    try:
        job = Job(f"{served.url}/model.bin", tmp_path / "model.bin", sha256=DIGEST if checksum else None)
        (path,) = download.fetch_all([job], Settings(connections=2, chunk_bytes=(2 << 20) + 5, retries=1))
    finally:
        served.close()
    assert len([r for r in served.behaviour.requests if r and r != "bytes=0-0"]) == 2
    assert path.read_bytes() == PAYLOAD
