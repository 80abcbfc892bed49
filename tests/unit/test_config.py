from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bluegreen.config import (
    CLIENT_SLACK_SECONDS,
    COMMAND_SECONDS,
    COMPOSE_SECONDS,
    INPUTS,
    LOCK_BEAT_SECONDS,
    LOCK_SILENCE_SECONDS,
    RECONNECT_LOCK_SECONDS,
    ConfigError,
    inputs_from_env,
    load_config,
    missing_inputs,
    secret_values,
    with_settings_file,
)
from bluegreen.report import Reporter

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAline1\nBBBBline2\n-----END OPENSSH PRIVATE KEY-----\n"


def raw(**overrides: str) -> dict[str, str]:
    values = {spec.name: spec.default for spec in INPUTS}
    values.update(
        {
            "host": "deploy.example.com",
            "username": "deploy",
            "key": KEY,
            "fingerprint": "SHA256:" + "A" * 43,
            "app-dir": "/srv/app",
            "ref": "0123456789abcdef0123456789abcdef01234567",
            "blue-health-urls": "http://127.0.0.1:8001/api/v1/\nhttp://127.0.0.1:3001/",
            "green-health-urls": "http://127.0.0.1:8002/api/v1/ http://127.0.0.1:3002/",
        }
    )
    values.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return values


def error_for(**overrides: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(raw(**overrides))
    return caught.value


def test_defaults_and_derived_values() -> None:
    cfg = load_config(raw())
    assert cfg.port == 22 and cfg.project_name == "app" and cfg.health_timeout == 60
    assert cfg.health_urls["blue"] == ("http://127.0.0.1:8001/api/v1/", "http://127.0.0.1:3001/")
    assert cfg.health_urls["green"] == ("http://127.0.0.1:8002/api/v1/", "http://127.0.0.1:3002/")
    assert cfg.app_path(cfg.stack_file("green")) == "/srv/app/docker-compose.green.yml"
    assert cfg.upstream_path("blue") == "/srv/app/nginx/upstream.blue.conf"
    assert cfg.upstream_target_path == "/srv/app/nginx/conf.d/upstream.conf"


@pytest.mark.parametrize(
    ("app_dir", "project"),
    [("/srv/hint_system", "hint_system"), ("/srv/My.App", "myapp"), ("/srv/-x-", "x-"), ("/srv/...", "app")],
)
def test_default_project_is_the_one_compose_gives_the_folder(app_dir: str, project: str) -> None:
    """So a host set up by the seed's script (compose run in app-dir) is already in the action's project."""
    assert load_config(raw(**{"app-dir": app_dir})).project_name == project


def test_empty_base_compose_file_means_none() -> None:
    assert load_config(raw(**{"base-compose-file": ""})).base_compose_file == ""


def test_absolute_upstream_target_is_allowed_for_nginx_on_the_host() -> None:
    cfg = load_config(raw(**{"upstream-target": "/etc/nginx/conf.d/upstream.conf"}))
    assert cfg.upstream_target_path == "/etc/nginx/conf.d/upstream.conf"


@pytest.mark.parametrize("name", [s.name for s in INPUTS if s.required])
def test_every_required_input_is_named_when_missing(name: str) -> None:
    err = error_for(**{name: ""})
    assert err.input == name and "is required" in str(err)


def test_a_host_key_pin_is_required_unless_explicitly_skipped() -> None:
    err = error_for(fingerprint="")
    assert err.input == "known-hosts" and "ssh-keyscan" in err.fix
    assert load_config(raw(fingerprint="", **{"insecure-skip-host-key-check": "true"})).insecure_skip_host_key_check


def test_several_fingerprints_newline_or_comma_separated() -> None:
    a, b, c = ("SHA256:" + ch * 43 for ch in "abc")
    assert load_config(raw(fingerprint=f"{a}\n{b}, {c}")).fingerprints == (a, b, c)


def test_the_line_ssh_keygen_prints_is_taken_as_its_fingerprint() -> None:
    """What `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints, pasted whole, as the error's fix says."""
    a, b = ("SHA256:" + ch * 43 for ch in "ab")
    pasted = f"256 {a} root@web-1 (ED25519)\n3072 {b}= root@web-1 (RSA)"
    assert load_config(raw(fingerprint=pasted)).fingerprints == (a, b)
    assert error_for(fingerprint="256 MD5:ab:cd root@web-1 (ED25519)").input == "fingerprint"


@pytest.mark.parametrize(
    ("value", "seconds"), [("45", 45), ("30s", 30), ("10m", 600), ("1h", 3600), ("1m30s", 90), (" 2M ", 120)]
)
def test_times_are_seconds_or_durations_as_people_write_them(value: str, seconds: int) -> None:
    cfg = load_config(raw(**{"lock-timeout": value, "drain-timeout": value, "health-timeout": "1h"}))
    assert (cfg.lock_timeout, cfg.drain_timeout) == (seconds, seconds)


@pytest.mark.parametrize("value", ["m", "1.5m", "30 s", "1d", "-30s", "1s30m", "30sec"])
def test_a_time_that_is_no_duration_is_refused_by_name(value: str) -> None:
    err = error_for(**{"lock-timeout": value})
    assert err.input == "lock-timeout" and "30s, 10m or 1h" in err.fix


def test_a_time_out_of_range_says_it_in_seconds() -> None:
    err = error_for(**{"health-timeout": "2h"})
    assert err.input == "health-timeout" and "7200 s" in err.problem and "3600" in err.fix


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("host", "user@host", "not a host name"),
        ("host", "-oProxyCommand=x", "not a host name"),
        ("port", "70000", "out of range"),
        ("port", "22; rm -rf /", "not a whole number"),
        ("username", "root;id", "not a valid user name"),
        ("username", "-l", "not a valid user name"),
        ("fingerprint", "MD5:aa:bb", "not a SHA256"),
        ("insecure-skip-host-key-check", "maybe", "not a boolean"),
        ("known-hosts", "[127.0.0.1]:22 ssh-ed25519 $(id)", "line 1 is not a known_hosts entry"),
        ("known-hosts", "# comment\nexample.com", "line 2 is not a known_hosts entry"),
        ("connect-timeout", "0", "out of range"),
        ("connect-retries", "11", "out of range"),
        ("app-dir", "srv/app", "not absolute"),
        ("app-dir", "/srv/../etc", "contains '..'"),
        ("app-dir", "/srv/app\n/etc", "control character"),
        ("app-dir", "/", "root directory"),
        ("app-dir", "/srv/app; touch /tmp/x", "characters other than"),
        ("app-dir", "/srv/$(id)", "characters other than"),
        ("compose-file", "docker compose.{color}.yml", "characters other than"),
        ("upstream-target", "nginx/`id`.conf", "characters other than"),
        ("blue-health-urls", "http://127.0.0.1:1/`id`", "characters a URL cannot hold"),
        ("blue-health-urls", "http://127.0.0.1:1/\n;id", "not an http(s) URL"),
        ("ref", "$(reboot)", "not a valid git ref"),
        ("ref", "--upload-pack=evil", "not a valid git ref"),
        ("ref", "main..dev", "not a valid git ref"),
        ("project-name", "My App", "not a valid compose project name"),
        ("base-compose-file", "/etc/passwd", "is absolute"),
        ("compose-file", "docker-compose.yml", "no {color} placeholder"),
        ("compose-file", "../{color}.yml", "contains '..'"),
        ("compose-file", "{color}/{name}.yml", "placeholder other than"),
        ("upstream-file", "nginx/upstream.conf", "no {color} placeholder"),
        ("upstream-target", "--config=x", "starts with '-'"),
        ("blue-health-urls", "ftp://127.0.0.1/", "not an http(s) URL"),
        ("green-health-urls", "http://u:p@127.0.0.1/", "carries credentials"),
        ("green-health-urls", "http://127.0.0.1:99999/", "invalid port"),
        ("health-timeout", "0", "out of range"),
        ("health-interval", "-1", "not a duration"),
        ("nginx-container", "nginx; reboot", "not a container name"),
        ("public-url", "javascript:alert(1)", "not an http(s) URL"),
        ("drain-timeout", "1e3", "not a duration"),
        ("lock-timeout", "`id`", "not a duration"),
        ("host", "a.example.com, a.example.com:22", "listed twice"),
        ("lb-detach-command", "lbctl\ndetach", "contains a newline"),
        ("lb-attach-command", "--help", "does not start with a command"),
        ("lb-attach-command", "FOO=1 lbctl", "does not start with a command"),
        ("lb-timeout", "soon", "is not a duration"),
        ("host", "web-1, WEB-1", "WEB-1:22 is listed twice"),
        ("host", "a.example.com:0", "out of range"),
        ("host", "[::1]x", "text after ']'"),
        ("host", "a.example.com;b", "not a host name"),
        ("host", " , ", "is required"),
        ("batch-size", "0", "out of range"),
        ("batch-size", "150%", "out of range"),
        ("batch-size", "half", "not a whole number"),
        ("on-host-failure", "continue", "rollback-all"),
        ("host-url", "http://127.0.0.1:8080/`id`", "characters a URL cannot hold"),
        ("proxy-jump", "bastion.example.com", "not user@bastion[:port]"),
        ("proxy-jump", "root;id@bastion", "not user@bastion[:port]"),
        ("proxy-jump", "ops@-oProxyCommand=x", "not a host name"),
        ("proxy-known-hosts", "bastion ssh-ed25519 $(id)", "line 1 is not a known_hosts entry"),
    ],
)
def test_bad_values_name_the_input_and_the_fix(name: str, value: str, words: str) -> None:
    err = error_for(**{name: value})
    assert err.input == name
    assert words in err.problem
    assert err.fix
    assert str(err).startswith(f"input '{name}': ")


def test_several_hosts_each_with_its_own_port_are_one_fleet() -> None:
    cfg = load_config(raw(host="web-1.example.com, web-2.example.com:2222\n[2001:db8::7]:23\n2001:db8::8", port="2200"))
    assert cfg.hosts == (
        ("web-1.example.com", 2200),
        ("web-2.example.com", 2222),
        ("2001:db8::7", 23),
        ("2001:db8::8", 2200),
    )
    assert (cfg.host, cfg.port) == ("web-1.example.com", 2200)
    second = cfg.for_host(1)
    assert (second.host, second.port, second.hosts) == ("web-2.example.com", 2222, (("web-2.example.com", 2222),))
    assert load_config(raw(host="web-1 web-2\tweb-3", port="22")).hosts == (("web-1", 22), ("web-2", 22), ("web-3", 22))


@pytest.mark.parametrize(
    ("size", "hosts", "count"), [("1", 3, 1), ("2", 3, 2), ("9", 3, 3), ("50%", 3, 2), ("100%", 4, 4), ("10%", 3, 1)]
)
def test_batch_size_is_a_count_or_a_percentage_rounded_up(size: str, hosts: int, count: int) -> None:
    names = ",".join(f"web-{i}.example.com" for i in range(hosts))
    assert load_config(raw(host=names, batch_size=size)).batch_count() == count


def test_public_url_belongs_to_the_fleet_and_host_url_to_each_host() -> None:
    cfg = load_config(
        raw(host="a.example.com,b.example.com", public_url="https://example.com/", host_url="http://127.0.0.1:8080/")
    )
    assert cfg.public_url == "https://example.com/" and cfg.for_host(0).public_url == ""
    assert cfg.for_host(1).host_url == "http://127.0.0.1:8080/"
    alone = load_config(raw(public_url="https://example.com/"))
    assert alone.for_host(0).public_url == "https://example.com/"


def test_the_bastion_takes_proxy_key_and_proxy_known_hosts_else_the_hosts_own() -> None:
    cfg = load_config(raw(proxy_jump="ops@bastion.example.com:2222"))
    bastion = cfg.bastion()
    assert (bastion.username, bastion.host, bastion.port, bastion.key) == ("ops", "bastion.example.com", 2222, KEY)
    assert bastion.fingerprints == cfg.fingerprints and bastion.proxy_jump is None
    line = "bastion.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEEtIhgE4l/mD3lJv1ZfG8Kk7n0wR6m6r7Eo1C2eQYgL"
    other = "-----BEGIN OPENSSH PRIVATE KEY-----\nCCCCproxy\n-----END OPENSSH PRIVATE KEY-----\n"
    pinned = load_config(raw(proxy_jump="ops@[2001:db8::1]", proxy_key=other, proxy_known_hosts=line)).bastion()
    assert (pinned.host, pinned.port, pinned.key) == ("2001:db8::1", 22, other.strip())
    assert pinned.known_hosts == line and pinned.fingerprints == ()
    assert "CCCCproxy" in secret_values(raw(proxy_key=other))


def test_health_interval_longer_than_timeout() -> None:
    err = error_for(**{"health-timeout": "5", "health-interval": "10"})
    assert err.input == "health-interval"


def test_inputs_from_env_reads_runner_names_and_falls_back_to_github_sha() -> None:
    env = {"INPUT_APP-DIR": "/srv/x", "INPUT_REF": "", "GITHUB_SHA": "abc123", "INPUT_BASE-COMPOSE-FILE": ""}
    values = inputs_from_env(env)
    assert values["app-dir"] == "/srv/x" and values["ref"] == "abc123" and values["base-compose-file"] == ""
    assert inputs_from_env({})["base-compose-file"] == "docker-compose.base.yml"


def test_secret_values_are_the_key_body_lines_and_the_passphrase() -> None:
    assert secret_values({"key": KEY, "passphrase": "hunter2"}) == ["AAAAline1", "BBBBline2", "hunter2"]


_PATH_INPUTS = ["base-compose-file", "compose-file", "upstream-file", "upstream-target"]


@given(st.sampled_from(_PATH_INPUTS), st.text(min_size=1, max_size=40))
def test_accepted_paths_stay_inside_app_dir_or_are_absolute_without_dotdot(name: str, value: str) -> None:
    try:
        cfg = load_config(raw(**{name: value}))
    except ConfigError as err:
        assert err.input == name
        return
    path = getattr(cfg, name.replace("-", "_"))
    assert ".." not in path.split("/") and "\n" not in path and not path.startswith("-")
    assert not path.startswith("/") or name == "upstream-target"


@given(st.text(max_size=60))
def test_any_ref_is_accepted_only_as_a_safe_git_name(value: str) -> None:
    try:
        cfg = load_config(raw(ref=value))
    except ConfigError as err:
        assert err.input == "ref"
        return
    assert cfg.ref == value.strip() and not cfg.ref.startswith("-") and ".." not in cfg.ref
    assert all(ch.isalnum() or ch in "._/+-" for ch in cfg.ref)


def test_command_keep_previous_and_nginx_sudo() -> None:
    assert load_config(raw()).command == "deploy" and load_config(raw()).keep_previous == "stopped"
    rollback = load_config(raw(command="rollback", ref=""))
    assert rollback.command == "rollback" and rollback.ref == ""
    assert "give one of deploy, rollback" in str(error_for(command="revert"))
    assert error_for(keep_previous="paused").input == "keep-previous"
    assert load_config(raw(nginx_sudo="true")).nginx_sudo is True
    err = error_for(nginx_sudo="true", nginx_container="web")
    assert err.input == "nginx-sudo" and "clear nginx-container" in err.fix


def test_pre_switch_command_is_a_service_then_argv_never_a_shell_line() -> None:
    cfg = load_config(raw(pre_switch_command="backend_{color} python manage.py migrate --noinput"))
    assert cfg.pre_switch_for("green") == ("backend_green", ["python", "manage.py", "migrate", "--noinput"])
    hostile = load_config(raw(pre_switch_command="backend_{color} sh -c 'id' ; $(touch /tmp/x) `id` | cat"))
    assert hostile.pre_switch_for("blue") == (
        "backend_blue",
        ["sh", "-c", "id", ";", "$(touch", "/tmp/x)", "`id`", "|", "cat"],
    )
    assert load_config(raw()).pre_switch_command == ()
    assert load_config(raw(pre_switch_timeout="30")).pre_switch_timeout == 30


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("backend_{color} python 'manage.py", "cannot be split into words"),
        ("backend_{color}", "has no command after the service"),
        ("'backend;rm' ls", "is not a compose service name"),
        ("$(id) ls", "is not a compose service name"),
        ("backend ls\nrm -rf /", "newline"),
    ],
)
def test_a_bad_pre_switch_command_names_the_input(value: str, problem: str) -> None:
    err = error_for(pre_switch_command=value)
    assert err.input == "pre-switch-command" and problem in err.problem


@given(st.integers(1, 3600), st.integers(1, 600), st.integers(1, 86400), st.integers(0, 3600), st.integers(0, 86400))
def test_every_time_limit_the_inputs_allow_fits_the_fixed_ones(
    health: int, interval: int, pre_switch: int, drain: int, lock: int
) -> None:
    """No clock of the action ends a wait an input allows: the lock has none while the run beats,
    and the host-side limit of a command always fires before the client gives up on it."""
    values = {
        "health-timeout": str(health),
        "health-interval": str(interval),
        "pre-switch-timeout": str(pre_switch),
        "drain-timeout": str(drain),
        "lock-timeout": str(lock),
    }
    if interval > health:
        assert error_for(**values).input == "health-interval"
        return
    cfg = load_config(raw(**values))
    assert (cfg.pre_switch_timeout, cfg.drain_timeout, cfg.lock_timeout) == (pre_switch, drain, lock)
    assert LOCK_SILENCE_SECONDS >= 6 * LOCK_BEAT_SECONDS and CLIENT_SLACK_SECONDS > 5  # timeout --kill-after=5
    assert COMPOSE_SECONDS >= COMMAND_SECONDS
    assert RECONNECT_LOCK_SECONDS > LOCK_SILENCE_SECONDS  # a lost session's own holder lets go first


def test_env_is_dotenv_lines_with_quotes_that_may_span_lines() -> None:
    text = (
        "# the app's secrets\n"
        "SECRET_KEY=abc def # kept\n"
        "export DB_PASSWORD = 'it\"s $literal'\n"
        "\n"
        'TLS_KEY="-----BEGIN KEY-----\n'
        "AAAA\\tBBBB\n"
        '-----END KEY-----"\r\n'
        "EMPTY=\n"
    )
    assert load_config(raw(env=text)).env == (
        ("SECRET_KEY", "abc def # kept"),
        ("DB_PASSWORD", 'it"s $literal'),
        ("TLS_KEY", "-----BEGIN KEY-----\nAAAA\tBBBB\n-----END KEY-----"),
        ("EMPTY", ""),
    )
    assert load_config(raw()).env == () and load_config(raw()).prune is True
    assert load_config(raw(prune="false")).prune is False


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("A=1\nS3CRETVALUE", "line 2 has no '='"),
        ("A=1\n9LIVES=s3cret", "line 2: the name is not a variable name"),
        ("A=s3cret\nA=s3cret2", "line 2 sets A again (line 1)"),
        ("A='s3cret\nstill", "line 1: its quote is never closed"),
        ('A="s3cret" tail', "line 1: text after the closing quote"),
        ("DOCKER_HOST=tcp://s3cret", "line 1: DOCKER_HOST steers docker or the shell"),
        ("PATH=/s3cret", "line 1: PATH steers docker or the shell"),
    ],
)
def test_a_bad_env_line_is_named_by_its_number_never_its_value(text: str, problem: str) -> None:
    err = error_for(env=text)
    assert err.input == "env" and problem in str(err)
    assert "s3cret" not in str(err).lower()


def test_a_value_that_is_not_utf8_is_refused_by_input_and_line_never_shown() -> None:
    """A Latin-1 .env read by the CLI: Python holds its byte 0xe9 as the lone surrogate \\udce9."""
    latin1 = b"A=1\nPASSWORD=caf\xe9s3cret\n".decode("utf-8", "surrogateescape")
    err = error_for(env=latin1)
    assert err.input == "env" and "line 2 is not UTF-8 text" in str(err) and "UTF-8" in err.fix
    assert "s3cret" not in str(err) and "\udce9" not in str(err)
    err = error_for(**{"app-dir": "/srv/caf\udce9"})
    assert err.input == "app-dir" and "is not UTF-8 text" in str(err)


def test_every_env_value_and_each_of_its_lines_is_masked_even_when_env_does_not_parse() -> None:
    masked = secret_values({"env": 'A=s3cret one\nB="line one\nline two"\n'})
    assert {"s3cret one", "line one\nline two", "line one", "line two"} <= set(masked)
    assert "s3cretline" in secret_values({"env": "A=1\ns3cretline\n"})


def test_the_load_balancer_hooks_come_as_a_pair_and_never_take_every_host_out() -> None:
    hooks = {"lb-detach-command": "lbctl detach", "lb-attach-command": "lbctl attach"}
    err = error_for(**{"lb-detach-command": "lbctl detach"})
    assert err.input == "lb-attach-command" and "set both, or neither" in err.fix
    err = error_for(**hooks)  # one host: out of the load balancer is downtime
    assert err.input == "lb-detach-command" and "proxy_next_upstream error" in err.fix
    err = error_for(host="web-1, web-2", **{"batch-size": "100%"}, **hooks)
    assert err.input == "batch-size" and "give a batch-size smaller than 2" in err.fix
    config = load_config(raw(host="web-1, web-2", **hooks))
    assert config.lb_detach_command == ("lbctl", "detach") and config.lb_attach_command == ("lbctl", "attach")


def test_no_mask_for_a_value_too_short_or_too_common_to_be_a_secret() -> None:
    """A mask of `1` would turn every 1 of the job's log into ***, the action's own messages too."""
    masked = secret_values({"env": "A=1\nDEBUG=true\nMODE=production\nPORT=5432\nTOKEN=s3cr3t-t0ken\n"})
    assert masked == ["s3cr3t-t0ken"]
    err = error_for(env="A=1\nA=2\nPASSWORD=hunter2-long\n")
    scrubbed = Reporter(secret_values({"env": "A=1\nA=2\nPASSWORD=hunter2-long\n"})).scrub(str(err))
    assert "line 2 sets A again (line 1)" in scrubbed


def test_vars_are_the_apps_plain_values_never_masked_and_a_name_is_set_once() -> None:
    cfg = load_config(raw(env="TOKEN=s3cr3t-t0ken", vars="DEBUG=false\nHOSTNAME=shop.example.com"))
    assert cfg.env == (("TOKEN", "s3cr3t-t0ken"), ("DEBUG", "false"), ("HOSTNAME", "shop.example.com"))
    masked = secret_values(raw(env="TOKEN=s3cr3t-t0ken", vars="HOSTNAME=shop.example.com"))
    assert "s3cr3t-t0ken" in masked and "shop.example.com" not in masked
    err = error_for(env="TOKEN=s3cr3t-t0ken", vars="TOKEN=plain")
    assert err.input == "vars" and "TOKEN" in err.problem and "s3cr3t" not in str(err) and "plain" not in str(err)
    assert error_for(vars="no equals sign").input == "vars"


def test_public_url_status_takes_classes_and_codes_and_refuses_the_rest() -> None:
    cfg = load_config(raw(**{"public-url-status": "2xx, 301 302"}))
    assert cfg.site_statuses == ("2xx", "301", "302") and cfg.site_answers == "2xx or 301 or 302"
    assert cfg.site_up(204) and cfg.site_up(302) and not cfg.site_up(303) and not cfg.site_up(404)
    default = load_config(raw())
    assert default.site_up(302) and default.site_up(200) and not default.site_up(404)
    assert not default.public_url_insecure
    for bad in ("ok", "2XX0", "600", "20"):
        err = error_for(**{"public-url-status": bad})
        assert err.input == "public-url-status" and "2xx" in err.fix


def test_every_missing_input_is_named_at_once() -> None:
    err = error_for(host="", username="", key="", fingerprint="", ref="")
    assert err.input == "host"
    assert "(missing too: username, key, known-hosts, ref)" in err.problem
    assert missing_inputs({"command": "deploy"}, for_deploy=False) == [
        "host",
        "username",
        "key",
        "known-hosts",
        "app-dir",
    ]
    assert error_for(fingerprint=" , ").input == "known-hosts"  # separators only: still no pin


SETTINGS = """\
host: [web-1.example.com, web-2.example.com]
username: deploy
app-dir: /srv/app
drain-timeout: 1m
prune: false
port: 2222
"""


def test_a_settings_file_fills_every_input_left_empty_or_at_its_default(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy/bluegreen.yml").write_text(SETTINGS)
    given = raw(config="deploy/bluegreen.yml", host="", username="ops", port="22")
    cfg = load_config(with_settings_file(given, tmp_path))
    assert cfg.hosts == (("web-1.example.com", 2222), ("web-2.example.com", 2222))  # port at its default: the file's
    assert cfg.username == "ops"  # set in with: wins
    assert cfg.drain_timeout == 60 and not cfg.prune
    assert with_settings_file(raw(), tmp_path) == raw()  # no config: nothing read


@pytest.mark.parametrize(
    ("text", "words", "fix"),
    [
        ("hots: web-1\n", "sets 'hots', which is no input", "did you mean host?"),
        ("key: |\n  -----BEGIN\n", "sets key, which is a secret", "from the repository's secrets"),
        ("env: A=1\n", "sets env, which is a secret", "with: block"),
        ("ref: main\n", "sets ref, which is the run's own, never a setting", "with: block"),
        ("plan: true\n", "sets plan, which is the run's own, never a setting", "with: block"),
        ("insecure-skip-host-key-check: true\n", "sets insecure-skip-host-key-check, which turns a check off", "with:"),
        ("host:\n", "sets host to nothing", "a list"),
        ("host: {a: 1}\n", "sets host to a dict", "a list"),
        ("host: [[web-1]]\n", "sets host to a list", "a list"),
        ("- web-1\n", "is not a mapping", "input-name: value"),
        ("host: [web-1\n", "is not valid YAML (line 2)", "syntax"),
    ],
)
def test_a_settings_file_is_refused_whole_by_what_is_wrong(tmp_path: Path, text: str, words: str, fix: str) -> None:
    (tmp_path / "s.yml").write_text(text)
    with pytest.raises(ConfigError) as refused:
        with_settings_file(raw(config="s.yml"), tmp_path)
    assert refused.value.input == "config" and f"s.yml {words}" in refused.value.problem
    assert fix in refused.value.fix
    assert "BEGIN" not in str(refused.value)


def test_a_settings_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        with_settings_file(raw(config="nowhere.yml"), tmp_path)
    assert "nowhere.yml cannot be read (No such file or directory)" in str(refused.value)
    assert "check the repository out" in refused.value.fix


def test_known_hosts_takes_what_ssh_keyscan_prints_comments_and_all() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()
    scanned = f"# web-1:22 SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\nweb-1 {key[0]} {key[1]}\n"
    assert load_config(raw(fingerprint="", **{"known-hosts": scanned})).known_hosts == scanned.strip()
