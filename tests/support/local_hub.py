"""A minimal local stand-in for the Hugging Face hub's file endpoint, for download tests.

Serves ``HEAD``/``GET {endpoint}/{repo}/resolve/{revision}/{file}`` from a dict of bytes with the
headers huggingface_hub reads (``X-Repo-Commit``, ``ETag``, ``Content-Length``), on 127.0.0.1
(the only address the test network guard allows). Unknown files answer 404 like the hub.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def _handler(files: dict[tuple[str, str], bytes], log: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _lookup(self) -> bytes | None:
            path = self.path.split("?")[0].lstrip("/")
            if "/resolve/" not in path:
                return None
            repo, rest = path.split("/resolve/", 1)
            filename = rest.split("/", 1)[1] if "/" in rest else ""
            return files.get((repo, filename))

        def _headers(self, body: bytes | None) -> None:
            if body is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()

        def do_HEAD(self) -> None:  # noqa: N802 (http.server API)
            log.append(f"HEAD {self.path}")
            self._headers(self._lookup())

        def do_GET(self) -> None:  # noqa: N802
            log.append(f"GET {self.path}")
            body = self._lookup()
            self._headers(body)
            if body is not None:
                for start in range(0, len(body), 1 << 16):
                    self.wfile.write(body[start:start + (1 << 16)])

        def log_message(self, *args) -> None:
            pass

    return Handler


@contextmanager
def local_hub(files: dict[tuple[str, str], bytes]) -> Iterator[tuple[str, list[str]]]:
    """Run the server; yield (endpoint URL, request log)."""
    log: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(files, log))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
