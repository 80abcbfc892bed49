"""The lab's keep-alive load balancer, run inside its container (python3 and nginx from the lab image):
nginx round robin over the hosts with `keepalive` connections to them and no retry on another host
(proxy_next_upstream off), as a cloud load balancer treats a target; and a control endpoint on the
lab network, as a cloud load balancer's API: POST /detach/NAME marks that host down, POST
/attach/NAME puts it back. Each answers once nginx has reloaded and its old workers (with their
connections to the hosts) are gone, so no request reaches a detached host any more.

    python3 lb.py LISTEN_PORT CONTROL_PORT NAME=HOST:PORT ...
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time

CONF = "/tmp/lb.conf"


def workers() -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return {int(line.split(None, 1)[0]) for line in out.splitlines() if "nginx: worker process" in line}


class Balancer:
    def __init__(self, listen: int, servers: dict[str, str]) -> None:
        self.listen, self.servers = listen, servers
        self.down: set[str] = set()
        self.lock = threading.Lock()

    def config(self) -> str:
        servers = "".join(
            f"server {address}{' down' if name in self.down else ''}; " for name, address in self.servers.items()
        )
        return (
            "worker_processes 1; pid /tmp/lb.pid; error_log /dev/stderr warn; events {} "
            f"http {{ access_log off; upstream fleet {{ {servers} keepalive 16; }} "
            f"server {{ listen {self.listen}; location / {{ proxy_pass http://fleet; proxy_next_upstream off; "
            'proxy_http_version 1.1; proxy_set_header Connection ""; } } }'
        )

    def write(self) -> None:
        with open(CONF + ".new", "w") as out:
            out.write(self.config())
        os.replace(CONF + ".new", CONF)

    def set(self, name: str, down: bool) -> None:
        with self.lock:
            (self.down.add if down else self.down.discard)(name)
            self.write()
            before = workers()
            subprocess.run(["nginx", "-c", CONF, "-s", "reload"], check=True)
            deadline = time.monotonic() + 30
            while (workers() & before or not workers()) and time.monotonic() < deadline:
                time.sleep(0.05)
            if workers() & before or not workers():  # nginx kept the old config, or its workers linger
                raise RuntimeError(f"the reload for {name} did not take effect")
            print(f"{'detached' if down else 'attached'} {name}", flush=True)


def main() -> None:
    listen, control = int(sys.argv[1]), int(sys.argv[2])
    balancer = Balancer(listen, dict(arg.split("=", 1) for arg in sys.argv[3:]))
    balancer.write()
    subprocess.Popen(["nginx", "-c", CONF, "-g", "daemon off;"])

    class Control(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            verb, _, name = self.path.strip("/").partition("/")
            if verb not in ("detach", "attach") or name not in balancer.servers:
                self.send_response(404)
                self.end_headers()
                return
            try:
                balancer.set(name, verb == "detach")
            except (RuntimeError, subprocess.CalledProcessError) as err:
                self.send_response(500)
                self.end_headers()
                self.wfile.write(f"{err}\n".encode())
                return
            self.send_response(200)
            self.end_headers()
            self.wfile.write(f"{verb}ed {name}\n".encode())

        def log_message(self, *args: object) -> None:
            pass

    http.server.ThreadingHTTPServer(("0.0.0.0", control), Control).serve_forever()


if __name__ == "__main__":
    main()
