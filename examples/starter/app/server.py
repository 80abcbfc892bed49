"""The starter app: a stand-in for yours. GET /healthz answers 200 once it serves; GET / says which
color and version answered. On SIGTERM it stops accepting and finishes the requests in flight, as
a blue-green switch needs (compose stops the old color with SIGTERM after nginx has moved on)."""

import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COLOR = os.environ.get("COLOR", "unknown")
VERSION = (Path(__file__).parent / "VERSION").read_text().strip()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        health = self.path == "/healthz"
        body = b"ok\n" if health else json.dumps({"color": COLOR, "version": VERSION}).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain" if health else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("0.0.0.0", 8000), Handler)
    server.daemon_threads = False  # server_close() waits for the requests in flight
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
