"""Sample app for the lab: one script plays the backend or the frontend of a color.

GET /api/v1/ and / answer with the version and color; /slow?s=N answers after N seconds.
The committed file STATUS sets the status code (a version can be made unhealthy).
On SIGTERM it stops accepting and finishes requests in flight, unless EXIT_ON_SIGTERM=1."""

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
ROLE, PORT = sys.argv[1], int(sys.argv[2])
COLOR = os.environ.get("COLOR", "?")
VERSION = Path(HERE, "VERSION").read_text().strip()
STATUS = int(Path(HERE, "STATUS").read_text().strip())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/slow":
            time.sleep(float(parse_qs(url.query).get("s", ["3"])[0]))
        body = json.dumps({"role": ROLE, "color": COLOR, "version": VERSION}).encode()
        self.send_response(STATUS)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True


server = Server(("127.0.0.1", PORT), Handler)


def stop(*_: object) -> None:
    if os.environ.get("EXIT_ON_SIGTERM") == "1":
        os._exit(0)
    threading.Thread(target=server.shutdown).start()


signal.signal(signal.SIGTERM, stop)
server.serve_forever()
server.server_close()
