"""Sample app for the lab: one script plays the backend or the frontend of a color.

GET /api/v1/ and / answer with the version and color; /slow?s=N answers after N seconds.
The committed file STATUS sets the status code (a version can be made unhealthy).
On SIGTERM it stops accepting and finishes requests in flight, unless EXIT_ON_SIGTERM=1.
The bridge variant sets BIND (the listen address), DB_URL (the backend's /api/v1/ fetches it and
answers 503 if the db is unreachable) and STATIC_DIR (the backend writes version.txt there at start,
as collectstatic would). Once /tmp/migrated exists in the container (a pre-switch-command makes it),
answers say "migrated": true. A host can make its own copy fail (the separate-host lab does, through
an untracked .env in app-dir): STATUS_OVERRIDE replaces STATUS, and PROXIED_STATUS is the answer to
requests that came through nginx (Host: backend or frontend, as proxy_pass sends it).
A partly broken version: the committed file FLAKY (or the variable FLAKY), "PATH N", makes every Nth
request to PATH answer 500 while every other path, the health URLs too, answers as usual."""

import json
import os
import signal
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
ROLE, PORT = sys.argv[1], int(sys.argv[2])
COLOR = os.environ.get("COLOR", "?")
VERSION = Path(HERE, "VERSION").read_text().strip()
STATUS = int(os.environ.get("STATUS_OVERRIDE") or Path(HERE, "STATUS").read_text().strip())
PROXIED_STATUS = os.environ.get("PROXIED_STATUS", "")
DB_URL = os.environ.get("DB_URL", "")
_flaky = (os.environ.get("FLAKY") or (Path(HERE, "FLAKY").read_text() if Path(HERE, "FLAKY").exists() else "")).split()
FLAKY_PATH, FLAKY_EVERY = (_flaky[0], int(_flaky[1])) if len(_flaky) == 2 else ("", 0)
flaky_count = 0
flaky_lock = threading.Lock()


def flaky(path: str) -> bool:
    """Whether this request to `path` is one FLAKY fails."""
    global flaky_count
    if not FLAKY_EVERY or path != FLAKY_PATH:
        return False
    with flaky_lock:
        flaky_count += 1
        return flaky_count % FLAKY_EVERY == 0


def db_status() -> tuple[int, dict[str, str]]:
    if ROLE != "backend" or not DB_URL:
        return STATUS, {}
    try:
        with urllib.request.urlopen(DB_URL, timeout=2):
            return STATUS, {"db": "reached"}
    except OSError as err:
        return 503, {"db": f"unreachable: {err}"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/slow":
            time.sleep(float(parse_qs(url.query).get("s", ["3"])[0]))
        status, db = db_status() if url.path.startswith("/api/") else (STATUS, {})
        if PROXIED_STATUS and self.headers.get("Host") in ("backend", "frontend"):
            status = int(PROXIED_STATUS)
        if flaky(url.path):
            status = 500
        migrated = {"migrated": True} if os.path.exists("/tmp/migrated") else {}
        body = json.dumps({"role": ROLE, "color": COLOR, "version": VERSION, **db, **migrated}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True


if ROLE == "backend" and os.environ.get("STATIC_DIR"):
    Path(os.environ["STATIC_DIR"], "version.txt").write_text(f"{VERSION} {COLOR}\n")
server = Server((os.environ.get("BIND", "127.0.0.1"), PORT), Handler)


def stop(*_: object) -> None:
    if os.environ.get("EXIT_ON_SIGTERM") == "1":
        os._exit(0)
    threading.Thread(target=server.shutdown).start()


signal.signal(signal.SIGTERM, stop)
server.serve_forever()
server.server_close()
