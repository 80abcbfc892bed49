"""strategy: canary's pure parts: the split, the log's counts, what keeps nginx from logging, the judge."""

from __future__ import annotations

import asyncio
import time

import pytest

from bluegreen.canary import (
    CanaryError,
    Counts,
    Held,
    Judge,
    log_blocked,
    parse_log,
    split_config,
    upstream_blocks,
    weights,
)
from bluegreen.config import CanaryPlan, ConfigError, load_config
from bluegreen.nginx import config_sections

BLUE = (
    "# blue\nupstream backend {\n    server backend_blue:8000;\n    keepalive 16;\n}\n"
    "upstream frontend { server 127.0.0.1:3001 max_fails=2; }\n"
)
GREEN = (
    "upstream backend {\n    least_conn;\n    keepalive 16;\n    server backend_green:8000 weight=3;\n"
    "    server backend_green2:8000;\n}\nupstream frontend { server 127.0.0.1:3002 max_fails=2; }\n"
)


def test_weights_give_the_new_servers_their_share_whatever_the_counts() -> None:
    for share in (1, 10, 33, 50, 99):
        for new, old in ((1, 1), (2, 1), (1, 3), (4, 6)):
            w_new, w_old = weights(share, new, old)
            assert w_new * new / (w_new * new + w_old * old) == pytest.approx(share / 100)
    assert weights(10, 1, 1) == (1, 9) and weights(50, 2, 1) == (1, 2)


def test_the_split_weights_each_block_and_keeps_the_new_files_directives() -> None:
    text = split_config(BLUE, GREEN, 10, log=("/tmp/c.log", "bluegreen_canary_app"))
    blocks = upstream_blocks(text)
    assert blocks["backend"] == [
        "least_conn",  # the balancing method first: nginx wants it before keepalive
        "server backend_green:8000 weight=1",  # its own weight=3 replaced
        "server backend_green2:8000 weight=1",
        "server backend_blue:8000 weight=18",
        "keepalive 16",
    ]
    assert blocks["frontend"] == [
        "server 127.0.0.1:3002 weight=1 max_fails=2",
        "server 127.0.0.1:3001 weight=9 max_fails=2",
    ]
    assert "log_format bluegreen_canary_app '$upstream_addr|$upstream_status|$upstream_response_time';" in text
    assert "access_log /tmp/c.log bluegreen_canary_app if=$upstream_addr;" in text
    assert "access_log" not in split_config(BLUE, GREEN, 10)


def test_a_sticky_split_hashes_the_key_instead_of_the_files_method() -> None:
    blocks = upstream_blocks(split_config(BLUE, GREEN, 50, "$cookie_session"))
    assert blocks["backend"][0] == "hash $cookie_session consistent"
    assert not any(d.startswith("least_conn") for d in blocks["backend"])


@pytest.mark.parametrize(
    ("live", "new", "problem"),
    [
        (BLUE, "server 127.0.0.1:1;", "has no upstream block"),
        (BLUE, "upstream backend { server a:1; }", "define different upstreams"),
        ("upstream backend { keepalive 2; } upstream frontend { server b:1; }", GREEN, "has no server"),
    ],
)
def test_upstream_files_that_cannot_be_split_are_refused(live: str, new: str, problem: str) -> None:
    with pytest.raises(CanaryError, match=problem):
        split_config(live, new, 10, names="u.blue, u.green")


def test_the_log_counts_every_try_for_its_color_and_nothing_else() -> None:
    colors = {"172.18.0.5:8000": "blue", "172.18.0.6:8000": "green", "[::1]:8002": "green"}
    log = "\n".join(
        [
            "172.18.0.6:8000|500|0.010",
            "172.18.0.6:8000|200|0.020",
            "172.18.0.6:8000, 172.18.0.5:8000|502, 200|0.001, 0.030",  # green refused, blue answered
            "[::1]:8002|200|0.005",
            "10.0.0.9:80|500|0.1",  # another app's upstream
            "172.18.0.5:8000|-|-",  # the client went away
            "garbage",
        ]
    )
    counts = parse_log(log, colors)  # type: ignore[arg-type]
    assert (counts["green"].responses, counts["green"].errors) == (4, 2)
    assert (counts["blue"].responses, counts["blue"].errors) == (2, 0)
    assert counts["green"].p99 == 0.020 and counts["blue"].times == [0.030]


def test_what_keeps_nginx_from_logging_the_canary_is_found() -> None:
    main = "# configuration file /etc/nginx/nginx.conf:\nhttp {\n  access_log off;\n  include conf.d/*.conf;\n}\n"
    assert "has access_log off in http" in log_blocked(main, {"backend"})
    quiet = "# configuration file /etc/nginx/nginx.conf:\nhttp { access_log /dev/null; include conf.d/*.conf; }\n"
    assert log_blocked(quiet, {"backend"}) == ""
    own = (
        "# configuration file /etc/nginx/sites/app.conf:\n"
        "server { listen 80; # a comment with a quote: don't\n"
        "  access_log /var/log/nginx/app.log;\n  location /api/ { proxy_pass http://backend/; } }\n"
        "server { listen 81; access_log off; location / { proxy_pass http://other; } }\n"
    )
    blocked = "a server or location in /etc/nginx/sites/app.conf sets its own access_log"
    assert log_blocked(quiet + own, {"backend"}) == blocked
    assert log_blocked(quiet + own, {"frontend"}) == ""
    health = (
        "# configuration file /etc/nginx/conf.d/app.conf:\n"
        "server { location /healthz { access_log off; return 200; } location / { proxy_pass http://backend; } }\n"
    )
    assert log_blocked(quiet + health, {"backend"}) == ""  # a location of its own, proxying nowhere
    grpc = (
        "# configuration file /etc/nginx/conf.d/g.conf:\n"
        "server { location / { access_log x; grpc_pass grpc://backend; } }\n"
    )
    assert (
        log_blocked(quiet + grpc, {"backend"})
        == "a server or location in /etc/nginx/conf.d/g.conf sets its own access_log"
    )
    stream = "# configuration file /etc/nginx/s.conf:\nstream { server { listen 9; proxy_pass backend; } }\n"
    assert log_blocked(quiet + stream, {"backend"}) == ""


def test_a_snippet_counts_where_it_is_included() -> None:
    """nginx -T shows each file once; its access_log counts for the block that includes it."""
    main = "# configuration file /etc/nginx/nginx.conf:\nhttp { access_log /dev/null; include conf.d/*.conf; }\n"
    server = (
        "# configuration file /etc/nginx/conf.d/app.conf:\n"
        "server { include snippets/quiet.conf; location / { proxy_pass http://backend; } }\n"
    )
    quiet = "# configuration file /etc/nginx/snippets/quiet.conf:\naccess_log off;\n"
    assert log_blocked(main + server + quiet, {"backend"}) == (
        "a server or location in /etc/nginx/conf.d/app.conf sets its own access_log"
    )
    health = server.replace(
        "server { include snippets/quiet.conf;", "server { location /h { include /etc/nginx/s*/q*.conf; }"
    )
    assert log_blocked(main + health + quiet, {"backend"}) == ""  # only its own location is quiet
    in_http = main.replace("include conf.d/*.conf;", "include snippets/quiet.conf; include conf.d/*.conf;")
    plain = server.replace("include snippets/quiet.conf; ", "")
    assert (
        log_blocked(in_http + plain + quiet, {"backend"})
        == "/etc/nginx/snippets/quiet.conf has access_log off in http {}"
    )
    # glob(3)'s matching, as nginx's include: `*` stops at `/`, and skips names starting with a dot
    deeper = quiet.replace("/etc/nginx/snippets/", "/etc/nginx/conf.d/snippets/")
    hidden = quiet.replace("/etc/nginx/snippets/quiet.conf", "/etc/nginx/conf.d/.quiet.conf")
    assert log_blocked(main + plain + deeper + hidden, {"backend"}) == ""
    # a file that includes itself is read once in its chain
    loop = "# configuration file /etc/nginx/conf.d/loop.conf:\ninclude conf.d/loop.conf;\n"
    assert log_blocked(main + plain + loop, {"backend"}) == ""


def judge(**plan: object) -> Judge:
    return Judge(CanaryPlan(**{"steps": (10, 50), "seconds": 60, "max_5xx": 1.0, "min_requests": 20, **plan}))  # type: ignore[arg-type]


def test_a_step_aborts_as_soon_as_enough_new_responses_are_surely_worse_than_the_limit_and_the_old() -> None:
    j = judge()
    assert j.decide(0, Counts(19, 5), Counts(100, 0)).kind == "wait"  # not enough yet
    assert j.decide(0, Counts(20, 1), Counts(100, 0)).kind == "wait"  # 5%, but 1 of 20 could be noise
    verdict = j.decide(0, Counts(20, 3), Counts(100, 0))
    assert verdict.kind == "abort" and "3 5xx of 20 (15.0%)" in verdict.why and "0 5xx of 100" in verdict.why
    assert j.results[-1].verdict == verdict.why and j.results[-1].share == 10


def test_at_the_steps_end_the_whole_window_is_judged_as_canary_max_5xx_says() -> None:
    verdict = judge(seconds=0).decide(0, Counts(20, 1), Counts(100, 0))
    assert verdict.kind == "abort" and "1 5xx of 20 (5.0%)" in verdict.why


def test_a_healthy_release_is_rarely_blamed_for_noise_within_a_step() -> None:
    """Both colors at a 0.5% baseline, judged every tick of a long step: the early abort needs 95%
    confidence, so noise alone almost never ends a step before its end."""
    import random

    rng = random.Random(7)
    aborted = 0
    for _ in range(200):
        j = judge()
        new, old = Counts(), Counts()
        for _ in range(120):
            for _ in range(2):
                new.include(Counts(1, rng.random() < 0.005))
            for _ in range(18):
                old.include(Counts(1, rng.random() < 0.005))
            if j.decide(0, new, old).kind == "abort":
                aborted += 1
                break
    assert aborted <= 10, aborted


def test_a_new_color_no_worse_than_the_old_one_is_not_blamed() -> None:
    assert judge().decide(0, Counts(100, 5), Counts(900, 60)).kind == "wait"  # 5% < the old color's 6.7%


def test_a_step_passes_once_held_with_enough_responses() -> None:
    j = judge(seconds=0)
    assert j.decide(0, Counts(20, 0), Counts(180, 0)).kind == "next"
    assert j.results[-1].verdict == "passed"


def test_an_inconclusive_step_is_held_once_more_then_aborted() -> None:
    j = judge(seconds=0)
    assert j.decide(1, Counts(3, 0), Counts(3, 0)).kind == "extend"
    verdict = j.decide(1, Counts(5, 0), Counts(5, 0))
    assert verdict.kind == "abort" and "the canary at 50% was inconclusive" in verdict.why
    assert judge(seconds=0, min_requests=0).decide(0, Counts(), Counts()).kind == "next"


def test_the_extended_step_waits_twice_its_length() -> None:
    j = judge(seconds=1)
    j.started[0] = time.monotonic() - 1.5
    j.extended.add(0)
    assert j.decide(0, Counts(0, 0), Counts()).kind == "wait"


def test_a_fleets_judge_decides_on_the_sum_of_its_hosts_counts() -> None:
    async def main() -> list[str]:
        j = judge(seconds=0)
        j.size = 2
        # each host alone is under canary-min-requests (and one is clean); their sum is judged
        verdicts = await asyncio.gather(
            j.tick(0, 0, Counts(12, 3), Counts(50, 0)), j.tick(0, 0, Counts(12, 0), Counts(50, 0))
        )
        return [v.kind for v in verdicts]

    assert asyncio.run(main()) == ["abort", "abort"]


def test_a_stopped_judge_releases_every_waiting_host() -> None:
    async def main() -> None:
        j = judge()
        j.size = 2
        waiting = asyncio.ensure_future(j.tick(0, 0, Counts(), Counts()))
        await asyncio.sleep(0)
        j.stop(RuntimeError("another host failed"))
        with pytest.raises(RuntimeError, match="another host failed"):
            await waiting
        with pytest.raises(RuntimeError):
            await j.tick(0, 1, Counts(), Counts())

    asyncio.run(main())


def test_a_held_record_round_trips_and_knows_its_split() -> None:
    split = split_config(BLUE, GREEN, 20)
    held = Held("blue", "green", "a" * 40, 20, split, BLUE, "https://x/runs/1", "2026-12-05T07:00:00Z")
    assert Held.parse(held.record()) == held
    assert held.serves(config_sections(f"# configuration file /etc/nginx/conf.d/u.conf:\n{split}"))
    assert not held.serves(config_sections(f"# configuration file /etc/nginx/conf.d/u.conf:\n{GREEN}"))
    assert Held.parse('{"live": "red"}') is None and Held.parse("junk") is None


BASE = {
    "host": "h",
    "username": "deploy",
    "key": "k",
    "app-dir": "/srv/app",
    "ref": "main",
    "fingerprint": "SHA256:" + "A" * 43,
    "blue-health-urls": "http://127.0.0.1:8001/",
    "green-health-urls": "http://127.0.0.1:8002/",
}


def test_the_canary_inputs_are_read_and_checked() -> None:
    cfg = load_config({**BASE, "strategy": "canary", "canary-steps": "5%, 25 ,hold", "canary-sticky": "header:X-User"})
    assert cfg.canary == CanaryPlan(steps=(5, 25), hold=True, sticky="$http_x_user")
    assert load_config({**BASE, "canary-sticky": "cookie:sid"}).canary.sticky == "$cookie_sid"
    bad = {
        "strategy": "blue",
        "canary-steps": "50,10",
        "canary-hold": "0",
        "canary-sticky": "cookie:a-b",
        "canary-max-5xx": "2x",
        "canary-min-requests": "-1",
    }
    for name, value in bad.items():
        with pytest.raises(ConfigError) as err:
            load_config({**BASE, name: value})
        assert err.value.input == name
    for steps in ("hold", "0,50", "100", "10,10"):
        with pytest.raises(ConfigError, match="canary-steps"):
            load_config({**BASE, "canary-steps": steps})
    with pytest.raises(ConfigError, match="more than one batch"):
        load_config({**BASE, "host": "a b", "strategy": "canary", "canary-steps": "10,hold"})
    held = {"host": "a b", "batch-size": "100%", "strategy": "canary", "canary-steps": "10,hold"}
    assert load_config({**BASE, **held})
    with pytest.raises(ConfigError, match="on-host-failure: stop would leave some hosts held"):
        load_config({**BASE, **held, "on-host-failure": "stop"})


def test_a_quoted_hash_in_the_upstream_file_is_refused_rather_than_cut() -> None:
    with pytest.raises(CanaryError, match="# inside quotes"):
        split_config(BLUE, 'map $uri $x { "~#a" 1; }\n' + GREEN, 10)


def test_a_name_with_several_addresses_counts_as_as_many_peers() -> None:
    """nginx makes each address of a server's name a peer with the server's weight (a scaled compose
    service): the weights make the share come out right all the same."""
    text = split_config(BLUE, GREEN, 10, peers={"backend_blue:8000": 3})
    w_green, w_blue = (int(d.rsplit("weight=", 1)[1].split()[0]) for d in upstream_blocks(text)["backend"][1:4:2])
    assert 2 * w_green / (2 * w_green + 3 * w_blue) == pytest.approx(0.10)
