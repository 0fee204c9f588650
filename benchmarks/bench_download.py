"""Weight downloads: one stream against parallel byte ranges from a rate-capped local server, and resume.

    .venv/bin/python benchmarks/bench_download.py [--megabytes 256] [--rate-mb 20] [--connections 8]

The server on 127.0.0.1 caps every connection at --rate-mb MB/s, as a CDN
caps one connection. Both runs fetch the same file (checked byte for byte);
then a download whose last ranges keep dropping fails, and the next run
fetches only the missing part (bytes served are counted).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

from remixer import download
from remixer.testing.file_server import Behaviour, FileServer


def timed_fetch(server: FileServer, target: Path, settings: download.Settings, digest: str) -> float:
    start = time.perf_counter()
    download.fetch_all([download.Job(f"{server.url}/model.bin", target, sha256=digest)], settings)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--rate-mb", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    payload = os.urandom(args.megabytes << 20)
    digest = hashlib.sha256(payload).hexdigest()
    behaviour = Behaviour(payload=payload, rate=args.rate_mb * (1 << 20))
    server = FileServer(behaviour)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, settings in (("one stream", download.Settings(connections=1, chunk_bytes=len(payload))),
                                   (f"{args.connections} ranges at once", download.Settings(
                                       connections=args.connections, chunk_bytes=16 << 20))):
                target = Path(tmp) / name.replace(" ", "-")
                seconds = timed_fetch(server, target, settings, digest)
                identical = target.read_bytes() == payload
                rows.append((name, seconds, len(payload) / seconds / (1 << 20), identical))
                target.unlink()

            # Interrupted: every try of the second half's ranges drops after 1 MB.
            behaviour.drop_after, behaviour.drops_left, behaviour.drop_from = 1 << 20, 10_000, len(payload) // 2
            target = Path(tmp) / "interrupted.bin"
            settings = download.Settings(connections=args.connections, chunk_bytes=16 << 20, retries=2)
            try:
                timed_fetch(server, target, settings, digest)
            except download.DownloadError:
                pass
            behaviour.drops_left, behaviour.sent = 0, 0
            seconds = timed_fetch(server, target, settings, digest)
            resumed = (behaviour.sent, target.read_bytes() == payload, seconds)
    finally:
        server.close()

    print(f"{args.megabytes} MB from 127.0.0.1, every connection capped at {args.rate_mb:g} MB/s")
    print("| download | seconds | MB/s | byte-identical |")
    print("|---|---|---|---|")
    for name, seconds, rate, identical in rows:
        print(f"| {name} | {seconds:.1f} | {rate:.0f} | {identical} |")
    print(f"speed-up: {rows[0][1] / rows[1][1]:.1f}x")
    sent, identical, seconds = resumed
    print(f"resume after drops: {sent / (1 << 20):.0f} MB fetched of {args.megabytes} MB "
          f"({seconds:.1f} s), byte-identical: {identical}")


if __name__ == "__main__":
    main()
