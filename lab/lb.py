"""The lab's keep-alive load balancer, run inside its container (python3 and nginx from the lab image):
nginx round robin over the hosts with `keepalive` connections to them and no retry on another host
(proxy_next_upstream off), as a cloud load balancer treats a target; and a control endpoint on the
lab network, as a cloud load balancer's API: POST /detach/NAME marks that host down, POST
/attach/NAME puts it back. Each answers once nginx has reloaded and its old workers (with their
connections to the hosts) are gone, so no request reaches a detached host any more.

With LATENCY_MS, each host is reached through a proxy that delivers every chunk and every end of a
connection that long after it came, each way: the network a real load balancer has between it and
the hosts. A host that closes an idle keep-alive connection is then seen to close it only that much
later, and a request sent on it meanwhile fails, as it does in a cloud; on one machine's bridge the
window is microseconds and the race is almost never lost.

    python3 lb.py LISTEN_PORT CONTROL_PORT LATENCY_MS NAME=HOST:PORT ...
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import subprocess
import sys
import threading
import time

CONF = "/tmp/lb.conf"
PROXY_PORTS = 20000  # the latency proxies listen on 127.0.0.1 from here, one port a host


async def one_way(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy `reader` to `writer`, each chunk and the end delivered `delay` s after it was read."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        with contextlib.suppress(OSError):
            while True:
                at, data = await queue.get()
                await asyncio.sleep(max(0.0, at + delay - loop.time()))
                if not data:
                    writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

    delivering = asyncio.create_task(deliver())
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            queue.put_nowait((loop.time(), data))
    queue.put_nowait((loop.time(), b""))
    await delivering


async def latency_proxy(port: int, host: str, target: int, delay: float) -> None:
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(one_way(reader, up_writer, delay), one_way(up_reader, writer, delay))
        for w in (writer, up_writer):
            w.close()

    server = await asyncio.start_server(connection, "127.0.0.1", port)
    await server.serve_forever()


def start_latency_proxies(servers: dict[str, str], delay: float) -> dict[str, str]:
    """A latency proxy per host, on a thread of its own; the addresses nginx reaches them at."""
    proxied = {name: f"127.0.0.1:{PROXY_PORTS + i}" for i, name in enumerate(servers)}

    async def run_all() -> None:
        targets = [address.rsplit(":", 1) for address in servers.values()]
        await asyncio.gather(
            *(latency_proxy(PROXY_PORTS + i, host, int(port), delay) for i, (host, port) in enumerate(targets))
        )

    threading.Thread(target=asyncio.run, args=(run_all(),), daemon=True).start()
    return proxied


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
    listen, control, latency_ms = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    servers = dict(arg.split("=", 1) for arg in sys.argv[4:])
    if latency_ms:
        servers = start_latency_proxies(servers, latency_ms / 1000)
    balancer = Balancer(listen, servers)
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
