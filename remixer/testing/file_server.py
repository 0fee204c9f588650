"""A local HTTP file server for download tests and the download benchmark.

Serves one payload with (or without) byte ranges; it can cap each
connection's rate, drop some connections after N bytes, corrupt one response,
and counts the bytes it sent.
"""

from __future__ import annotations

import http.server
import re
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Behaviour:
    payload: bytes = b""
    ranges: bool = True
    rate: float | None = None  # bytes per second per connection
    drop_after: int | None = None  # cut this many responses short ...
    drops_left: int = 0  # ... this many times
    drop_from: int = 0  # only responses starting at or after this byte are cut
    corrupt_left: int = 0  # responses whose bytes are flipped
    stall_s: float = 0.0  # wait before answering (timeouts)
    files: dict[str, bytes] | None = None  # path -> payload (a mirror's tree); None: `payload` at every path
    head: bool = True  # False: HEAD is refused with 405, as some servers do
    sent: int = 0
    active: int = 0  # responses being sent now, and the most at once
    peak: int = 0
    requests: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `behaviour.payload` as `behaviour` says (ranges, stalls, drops, corruption, a rate)."""

    protocol_version = "HTTP/1.1"
    behaviour: Behaviour  # set on the subclass handler_for makes

    def _payload(self) -> bytes | None:
        """What this path serves; None: a 404 was sent."""
        b = self.behaviour
        payload = b.payload if b.files is None else b.files.get(self.path.split("?")[0])
        if self.path.endswith("/missing") or payload is None:
            self.send_error(404)
            return None
        return payload

    def do_HEAD(self):  # noqa: N802 (http.server's naming)
        b = self.behaviour
        with b.lock:
            b.requests.append(f"HEAD {self.path}")
        if not b.head:
            self.send_error(405)
            return
        payload = self._payload()
        if payload is None:
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes" if b.ranges else "none")
        self.end_headers()

    def do_GET(self):  # noqa: N802 (http.server's naming)
        b = self.behaviour
        with b.lock:
            b.requests.append(self.headers.get("Range"))
        payload = self._payload()
        if payload is None:
            return
        if b.stall_s:
            time.sleep(b.stall_s)
        span = self._start_response(len(payload))
        if span is None:
            return
        body, cut = self._faults(span[0], payload[span[0]:span[1] + 1])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with b.lock:
            b.active += 1
            b.peak = max(b.peak, b.active)
        try:
            self._send(body[:cut] if cut is not None else body)
        finally:
            with b.lock:
                b.active -= 1
        if cut is not None:
            self.close_connection = True
            self.connection.shutdown(2)

    def _start_response(self, total: int) -> tuple[int, int] | None:
        """The status line for the asked range (206), the whole file (200) or none left (416: None)."""
        header = self.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", header or "") if self.behaviour.ranges else None
        if not match:
            self.send_response(200)
            return 0, total - 1
        start = int(match.group(1))
        end = min(int(match.group(2)) if match.group(2) else total - 1, total - 1)
        if start >= total:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{total}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        return start, end

    def _faults(self, start: int, body: bytes) -> tuple[bytes, int | None]:
        """The body with the behaviour's faults: flipped bytes, and where to drop the connection."""
        b = self.behaviour
        with b.lock:
            cut = b.drop_after if (b.drops_left > 0 and b.drop_after is not None and start >= b.drop_from
                                   and len(body) > b.drop_after) else None
            if cut is not None:
                b.drops_left -= 1
            corrupt = b.corrupt_left > 0 and len(body) > 1
            if corrupt:
                b.corrupt_left -= 1
        if corrupt:
            body = bytes(x ^ 0xFF for x in body[:64]) + body[64:]
        return body, cut

    def _send(self, body: bytes) -> None:
        behaviour, step = self.behaviour, 64 << 10
        began = time.perf_counter()
        for offset in range(0, len(body), step):
            piece = body[offset:offset + step]
            try:
                self.wfile.write(piece)
            except (BrokenPipeError, ConnectionResetError):
                return
            with behaviour.lock:
                behaviour.sent += len(piece)
            if behaviour.rate and offset + step < len(body):
                wait = (offset + len(piece)) / behaviour.rate - (time.perf_counter() - began)
                if wait > 0:
                    time.sleep(wait)

    def log_message(self, *args):
        """Quiet: the tests read the behaviour, not the log."""
        pass


def handler_for(behaviour: Behaviour) -> type[_Handler]:
    """A request handler class bound to `behaviour`."""
    return type("Handler", (_Handler,), {"behaviour": behaviour})


class FileServer:
    def __init__(self, behaviour: Behaviour):
        self.behaviour = behaviour
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_for(behaviour))
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        """Stop serving and release the port."""
        self.httpd.shutdown()
        self.httpd.server_close()
