"""A real HTTP server on 127.0.0.1 serving a folder, with injectable dropped connections."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Server:
    """Serves a directory over HTTP/1.1 with ``Range: bytes=N-``. ``drop[name] = (at, times)``
    sends the full ``Content-Length`` but closes the connection after ``at`` bytes of the body,
    ``times`` times (then serves the file whole); ``requests`` counts requests per file."""

    def __init__(self, root: Path, honour_range: bool = True):
        self.root, self.honour_range = root, honour_range
        self.drop: dict[str, list[int]] = {}
        self.requests: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                server.requests[name] = server.requests.get(name, 0) + 1
                path = server.root / name
                if not path.is_file():
                    self.send_error(404, "Not Found")
                    return
                body = path.read_bytes()
                start = 0
                rng = self.headers.get("Range")
                if rng and server.honour_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[start:]
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                drop = server.drop.get(name)
                if drop and drop[1] > 0:
                    drop[1] -= 1
                    self.wfile.write(part[: drop[0]])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # mid-body: the client sees the connection closed early
                    return
                self.wfile.write(part)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
