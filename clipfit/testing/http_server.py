"""A small threaded HTTP server on 127.0.0.1 that serves one folder, with ``Range`` support.

For tests of downloads: it records every request, can cut a file's first response after a
number of bytes (a lost connection), and stops itself after ``lifetime`` seconds.
"""

from __future__ import annotations

import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        name = os.path.basename(self.path.split("?")[0])
        path = os.path.join(self.server.folder, name)
        rng = self.headers.get("Range")
        self.server.requests.append((name, rng))
        self.server.paths.append(self.path)
        if not name or not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        start = 0
        match = re.match(r"bytes=(\d+)-$", rng or "")
        if match:
            start = int(match.group(1))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
        cut = self.server.cut_after.pop(name, None)
        if cut is not None:  # send part of the body, then drop the connection
            self.wfile.write(data[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    folder: str
    requests: List[Tuple[str, Optional[str]]]
    paths: List[str]
    cut_after: Dict[str, int]


class FileServer:
    """``with FileServer(folder) as server:`` serves ``folder`` at ``server.url``."""

    def __init__(self, folder: str, cut_after: Optional[Dict[str, int]] = None, lifetime: float = 120.0):
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.folder = folder
        self.httpd.requests = []
        self.httpd.paths = []
        self.httpd.cut_after = dict(cut_after or {})
        self.lifetime = lifetime
        self.timer = threading.Timer(lifetime, self.stop)
        self.timer.daemon = True

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> List[Tuple[str, Optional[str]]]:
        """(file name, Range header or None) of every request so far."""
        return self.httpd.requests

    @property
    def paths(self) -> List[str]:
        """The path of every request so far (host folders included where a test maps hosts onto them)."""
        return self.httpd.paths

    def serve(self, folder: str) -> None:
        """Serve ``folder`` from now on."""
        self.httpd.folder = folder

    def cut(self, name: str, after: int) -> None:
        """Drop the connection of the next response for ``name`` after ``after`` bytes."""
        self.httpd.cut_after[name] = after

    def __enter__(self) -> "FileServer":
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self.timer.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __exit__(self, *exc) -> None:
        self.timer.cancel()
        self.stop()
