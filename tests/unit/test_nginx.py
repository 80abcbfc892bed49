from __future__ import annotations

from bluegreen.config import Color
from bluegreen.nginx import (
    DEFAULT_PID_PATH,
    config_sections,
    live_color,
    normalize,
    parse_processes,
    pid_path,
    server_targets,
    servers,
    took_reload,
    worker_pids,
)

BLUE = "# blue\nupstream backend {\n    server 127.0.0.1:8001;\n    keepalive 16;\n}\n"
GREEN = "# green\nupstream backend {\n    server 127.0.0.1:8002;\n    keepalive 16;\n}\n"


def dump(upstream: str) -> str:
    return (
        "nginx: the configuration file /etc/nginx/nginx.conf syntax is ok\n"
        "# configuration file /etc/nginx/nginx.conf:\n"
        "http { include /etc/nginx/conf.d/*.conf; server { listen 80; location / { proxy_pass http://backend; } } }\n\n"
        "# configuration file /etc/nginx/conf.d/upstream.conf:\n" + upstream + "\n"
    )


def test_normalize_drops_comments_and_folds_space() -> None:
    assert normalize(BLUE) == "upstream backend { server 127.0.0.1:8001; keepalive 16; }"


def test_sections_of_a_dump() -> None:
    assert config_sections(dump(GREEN))[1] == normalize(GREEN)


def test_live_color_is_what_nginx_loaded() -> None:
    ups: dict[Color, str] = {"blue": BLUE, "green": GREEN}
    assert live_color(dump(GREEN), ups) == "green"
    assert live_color(dump(BLUE), ups) == "blue"
    assert live_color(dump("upstream backend { server 10.0.0.1:80; }"), ups) is None


def test_live_color_falls_back_to_server_addresses() -> None:
    reformatted = "upstream backend { server 127.0.0.1:8002 max_fails=3; }"
    assert servers(reformatted) == {"127.0.0.1:8002"}
    assert live_color(dump(reformatted), {"blue": BLUE, "green": GREEN}) == "green"


def test_identical_color_files_are_ambiguous() -> None:
    assert live_color(dump(BLUE), {"blue": BLUE, "green": BLUE}) is None


def test_workers_are_children_of_a_master() -> None:
    procs = parse_processes(
        "1 0 nginx: master process nginx -g daemon off; \n30 1 nginx: worker process \n31 1 nginx: worker process is "
        "shutting down \n77 70 nginx: worker process \ngarbage\n"
    )
    assert worker_pids(procs) == {30, 31}


def test_on_the_host_only_our_masters_workers_count() -> None:
    procs = parse_processes(
        "10 1 nginx: master process /usr/sbin/nginx\n11 10 nginx: worker process\n20 5 nginx: master process nginx "
        "-g daemon off;\n21 20 nginx: worker process\n"
    )
    assert worker_pids(procs) == {11, 21}
    assert worker_pids(procs, master=10) == {11}


def test_pid_path_from_the_dump() -> None:
    assert (
        pid_path("# configuration file /etc/nginx/nginx.conf:\nuser www-data;\npid /var/run/nginx.pid;\n")
        == "/var/run/nginx.pid"
    )
    assert pid_path("worker_processes 2;\n") == DEFAULT_PID_PATH


def test_server_targets_are_what_nginx_connects_to() -> None:
    text = (
        "upstream backend { server backend_blue:8000 max_fails=3; server 10.0.0.5; }\n"
        "upstream frontend { server [::1]:3001; server unix:/run/app.sock backup; }\n"
    )
    assert server_targets(text) == [
        ("10.0.0.5", "80"),
        ("::1", "3001"),
        ("backend_blue", "8000"),
        ("unix", "/run/app.sock"),
    ]
    assert server_targets("") == []


def test_a_reload_has_taken_only_once_no_old_worker_still_accepts() -> None:
    master = "1 0 nginx: master process nginx"
    before = {11, 12}
    new_workers = "21 1 nginx: worker process\n22 1 nginx: worker process"
    old_accepting = "11 1 nginx: worker process\n12 1 nginx: worker process is shutting down"
    old_closing = "11 1 nginx: worker process is shutting down\n12 1 nginx: worker process is shutting down"
    assert not took_reload(parse_processes(f"{master}\n{old_accepting}"), before)
    assert not took_reload(parse_processes(f"{master}\n{new_workers}\n{old_accepting}"), before)
    assert took_reload(parse_processes(f"{master}\n{new_workers}\n{old_closing}"), before)
    assert took_reload(parse_processes(f"{master}\n{new_workers}"), before)
