"""Fetch model files in parallel byte ranges, resumable, verified, moved into place atomically.

CDNs cap the rate of one connection, so a multi-gigabyte checkpoint over one
stream takes minutes where several ranges at once take seconds (the original
used pget for this). A file is fetched into a preallocated `<name>.part`;
which ranges are complete is recorded beside it (`<name>.part.json`), so an
interrupted download fetches only what is missing next time. Each range is
retried on its own. When the server does not do ranges (no 206 answer), one
stream is used. The finished file is checked against the manifest's size and
checksum (a mismatch fetches it once more from scratch) and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from remixer.errors import RemixerError

log = logging.getLogger(__name__)

TIMEOUT_S = 60
RETRIES = 4


class DownloadError(RemixerError, RuntimeError):
    """A file that could not be fetched; the message names it and its URL."""


@dataclass(frozen=True)
class Settings:
    connections: int = 8  # concurrent requests in all, across files
    chunk_bytes: int = 16 << 20
    retries: int = RETRIES
    timeout_s: float = TIMEOUT_S

    @classmethod
    def from_env(cls) -> "Settings":
        """Chunk size, parallel ranges and retries, from REMIXER_DOWNLOAD_* where set."""
        return cls(connections=max(1, int(os.environ.get("REMIXER_DOWNLOAD_CONNECTIONS", "8"))),
                   chunk_bytes=max(1, int(float(os.environ.get("REMIXER_DOWNLOAD_CHUNK_MB", "16")) * (1 << 20))))


@dataclass(frozen=True)
class Job:
    """One file to fetch: where from, where to, and what it must be."""

    url: str
    target: Path
    size: int | None = None
    sha256: str | None = None  # full digest or a prefix


Progress = Callable[[int], None]  # bytes just written


def fetch_all(jobs: Iterable[Job], settings: Settings = Settings(), progress_factory=None) -> list[Path]:
    """Fetch several files at once within `settings.connections` requests; one progress bar for the set.

    `progress_factory(total_bytes)` returns a context manager with `update(n)`
    (tqdm's interface); None: no progress.
    """
    jobs = list(jobs)
    probes = [_probe(job, settings) for job in jobs]
    total = sum(size for _, size in probes if size) or None
    gate = threading.BoundedSemaphore(settings.connections)
    bar = progress_factory(total) if progress_factory else None
    lock = threading.Lock()

    def advance(count: int) -> None:
        if bar is not None:
            with lock:
                bar.update(count)

    try:
        with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as files:
            futures = [files.submit(_fetch_one, job, ranged, size, settings, gate, advance)
                       for job, (ranged, size) in zip(jobs, probes)]
            return [future.result() for future in futures]
    finally:
        if bar is not None:
            bar.close()


@dataclass(frozen=True)
class Remote:
    """What a server says of a URL without sending the file: there or not, its size when it says, how asked."""

    present: bool
    size: int | None
    method: str  # "HEAD", or "GET bytes=0-0" where HEAD was refused
    problem: str = ""  # why not present: HTTP status or the network error


_HEAD_REFUSED = {400, 403, 405, 501}  # what servers answer a HEAD they do not serve (S3 presigned URLs: 403)


def ask(url: str, timeout_s: float = TIMEOUT_S) -> Remote:
    """Ask the server for `url`'s size: a HEAD, or a one-byte range request where HEAD is refused."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s) as response:
            length = response.headers.get("Content-Length")
            return Remote(True, int(length) if length is not None else None, "HEAD")
    except urllib.error.HTTPError as error:
        if error.code not in _HEAD_REFUSED:
            return Remote(False, None, "HEAD", f"HTTP {error.code}")
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        return Remote(False, None, "HEAD", _network_problem(error))
    method = "GET bytes=0-0"
    try:
        request = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return Remote(True, _first_byte_answer(response)[1], method)
    except urllib.error.HTTPError as error:
        return Remote(False, None, method, f"HTTP {error.code}")
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        return Remote(False, None, method, _network_problem(error))


def _network_problem(error: Exception) -> str:
    reason = getattr(error, "reason", None) or error
    return f"unreachable ({reason})"


def _first_byte_answer(response) -> tuple[bool, int | None]:
    """(the server does ranges, the file's size when it says) from the answer to a bytes=0-0 request: a 206's
    Content-Range total, or a 200's Content-Length (the whole file)."""
    if response.status == 206:
        match = re.match(r"bytes 0-0/(\d+)", response.headers.get("Content-Range", ""))
        if match:
            return True, int(match.group(1))
    length = response.headers.get("Content-Length")
    return False, int(length) if length is not None and response.status == 200 else None


def _probe(job: Job, settings: Settings) -> tuple[bool, int | None]:
    """(server does ranges, total size) from a one-byte range request."""
    request = urllib.request.Request(job.url, headers={"Range": "bytes=0-0"})
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout_s) as response:
            ranged, size = _first_byte_answer(response)
            return ranged, size if size is not None else job.size
    except urllib.error.HTTPError as error:
        raise DownloadError(f"could not download {job.target.name} from {job.url}: HTTP {error.code}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise DownloadError(f"could not download {job.target.name} from {job.url}: {error}") from None


def _fetch_one(job: Job, ranged: bool, size: int | None, settings: Settings, gate, advance: Progress) -> Path:
    job.target.parent.mkdir(parents=True, exist_ok=True)
    part = job.target.with_name(job.target.name + ".part")
    for attempt in (1, 2):
        if ranged and size:
            _fetch_ranges(job, part, size, settings, gate, advance)
        else:
            with gate:
                _fetch_stream(job, part, settings, advance)
        problem = _check(job, part)
        if problem is None:
            break
        _discard(part)
        if attempt == 2:
            raise DownloadError(f"{job.target.name} from {job.url}: {problem}; deleted, try again")
        log.warning("%s: %s; fetching it again", job.target.name, problem)
    os.replace(part, job.target)
    _state_path(part).unlink(missing_ok=True)
    log.info("downloaded %s", job.target)
    return job.target


def _fetch_ranges(job: Job, part: Path, size: int, settings: Settings, gate, advance: Progress) -> None:
    state_path = _state_path(part)
    done = _load_state(state_path, job.url, size) if part.exists() else set()
    if not part.exists() or part.stat().st_size != size:
        done = set()
        with open(part, "wb") as f:
            f.truncate(size)  # preallocated: every range writes at its own offset
    ranges = [(start, min(start + settings.chunk_bytes, size)) for start in range(0, size, settings.chunk_bytes)]
    already = sum(end - start for start, end in ranges if start in done)
    if already:
        log.info("%s: resuming, %d of %d bytes already here", job.target.name, already, size)
        advance(already)
    pending = [r for r in ranges if r[0] not in done]
    lock = threading.Lock()
    fd = os.open(part, os.O_WRONLY)
    try:
        def fetch(span: tuple[int, int]) -> None:
            with gate:
                _fetch_range(job, fd, span, settings, advance)
            with lock:
                done.add(span[0])
                _save_state(state_path, job.url, size, done)

        with ThreadPoolExecutor(max_workers=settings.connections) as pool:
            for future in [pool.submit(fetch, span) for span in pending]:
                future.result()
    finally:
        os.close(fd)


def _fetch_range(job: Job, fd: int, span: tuple[int, int], settings: Settings, advance: Progress) -> None:
    start, end = span
    last_error: Exception | None = None
    for attempt in range(settings.retries):
        written = 0
        try:
            request = urllib.request.Request(job.url, headers={"Range": f"bytes={start}-{end - 1}"})
            with urllib.request.urlopen(request, timeout=settings.timeout_s) as response:
                if response.status != 206:
                    raise DownloadError(f"the server stopped answering byte ranges (HTTP {response.status})")
                while chunk := response.read(1 << 20):
                    if written + len(chunk) > end - start:
                        raise DownloadError("the server sent more bytes than the range asked for")
                    os.pwrite(fd, chunk, start + written)
                    written += len(chunk)
                    advance(len(chunk))
            if written != end - start:  # a cut connection ends as a short read
                raise ConnectionError(f"connection closed after {written} of {end - start} bytes")
            return
        except urllib.error.HTTPError as error:
            advance(-written)
            raise DownloadError(f"could not download {job.target.name} from {job.url}: HTTP {error.code}") from None
        except (urllib.error.URLError, OSError, TimeoutError, ConnectionError) as error:
            advance(-written)
            last_error = error
            time.sleep(min(0.2 * 2 ** attempt, 5.0))
    raise DownloadError(
        f"could not download {job.target.name} from {job.url}: bytes {start}-{end - 1} failed {settings.retries} "
        f"times ({last_error}). What was fetched is kept; run again to resume."
    )


def _fetch_stream(job: Job, part: Path, settings: Settings, advance: Progress) -> None:
    """One stream from the start (the server does not do ranges)."""
    try:
        with urllib.request.urlopen(job.url, timeout=settings.timeout_s) as response, open(part, "wb") as out:
            expected = response.headers.get("Content-Length")
            while chunk := response.read(1 << 20):
                out.write(chunk)
                advance(len(chunk))
        if expected is not None and part.stat().st_size < int(expected):
            raise ConnectionError(f"connection closed after {part.stat().st_size} of {expected} bytes")
    except urllib.error.HTTPError as error:
        raise DownloadError(f"could not download {job.target.name} from {job.url}: HTTP {error.code}") from None
    except (urllib.error.URLError, OSError, TimeoutError, ConnectionError) as error:
        raise DownloadError(f"could not download {job.target.name} from {job.url}: {error}. "
                            "The server does not resume; run again to start over.") from None


def _check(job: Job, part: Path) -> str | None:
    size = part.stat().st_size
    if job.size is not None and size != job.size:
        return f"downloaded {size} bytes, expected {job.size}"
    if job.sha256:
        actual = sha256_of(part)
        if not actual.startswith(job.sha256):
            return f"checksum mismatch (sha256 {actual[:16]}..., expected {job.sha256[:16]}...)"
    return None


def sha256_of(path: Path) -> str:
    """The file's sha256, hex, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _state_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _load_state(path: Path, url: str, size: int) -> set[int]:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    if state.get("url") != url or state.get("size") != size:
        return set()
    return set(state.get("done", []))


def _save_state(path: Path, url: str, size: int, done: set[int]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"url": url, "size": size, "done": sorted(done)}))
    os.replace(temporary, path)


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _state_path(part).unlink(missing_ok=True)
