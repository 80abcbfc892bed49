from __future__ import annotations

import shlex

from hypothesis import given
from hypothesis import strategies as st

from bluegreen import commands
from bluegreen.commands import Compose


@given(st.lists(st.text(), min_size=1, max_size=6))
def test_shell_line_round_trips_any_argv(argv: list[str]) -> None:
    assert shlex.split(commands.shell_line(argv)) == argv


def test_shell_line_adds_a_host_side_timeout() -> None:
    assert shlex.split(commands.shell_line(["cat", "x; rm -rf /"], 30)) == [
        "timeout",
        "--kill-after=5",
        "30",
        "cat",
        "x; rm -rf /",
    ]


def test_tied_commands_keep_their_argv_intact() -> None:
    line = shlex.split(commands.shell_line(["echo", "$(id)", "a b"], 5, tied=True))
    assert line[:3] == ["sh", "-c", commands.TIED_TO_SESSION_SCRIPT]
    assert line[3:] == ["sh", "timeout", "--kill-after=5", "5", "echo", "$(id)", "a b"]


def test_once_the_lock_is_held_every_command_is_guarded_by_its_holder_stdin_fed_ones_too() -> None:
    holder = commands.Holder("/srv/app/.bluegreen", "4242 1000")
    for tied in (True, False):
        line = shlex.split(commands.shell_line(["tee", "x; rm -rf /"], 5, tied=tied, holder=holder))
        assert line[:8] == ["flock", "-o", "-s", "/srv/app/.bluegreen/busy", "sh", "-c", commands.GUARD_SCRIPT, "sh"]
        assert line[8:10] == ["/srv/app/.bluegreen/holder", "4242 1000"]
        assert line[-2:] == ["tee", "x; rm -rf /"]


def test_compose_v1_and_v2_argv() -> None:
    v1 = Compose("v1", "app", "/srv/app/docker-compose.blue.yml", "/srv/app")
    v2 = Compose("v2", "app", "/srv/app/docker-compose.blue.yml", "/srv/app")
    head = ["--project-name", "app", "--project-directory", "/srv/app", "--file", "/srv/app/docker-compose.blue.yml"]
    # each service is built by a build of its own (the action runs them at once), then started as built
    assert v1.build(["backend_blue", "frontend_blue"]) == [
        "docker-compose",
        *head,
        "build",
        "--parallel",
        "backend_blue",
        "frontend_blue",
    ]
    assert v2.build(["backend_blue"]) == ["docker", "compose", *head, "build", "backend_blue"]
    assert v1.up_color() == ["docker-compose", *head, "up", "--detach", "--force-recreate", "--no-build"]
    assert v2.up_color() == ["docker", "compose", *head, "up", "--detach", "--force-recreate", "--no-build", "--wait"]
    assert v1.up_base() == ["docker-compose", *head, "up", "--detach", "--no-recreate"]
    assert v2.up_base(["db", "redis"]) == ["docker", "compose", *head, "up", "--detach", "--no-recreate", "db", "redis"]
    assert v1.stop(["nginx"]) == ["docker-compose", *head, "stop", "nginx"]
    assert commands.compose_detect("v2") == ["docker", "compose", "version"]
    assert commands.compose_detect("v1") == ["sh", "-c", "command -v docker-compose"]


def test_no_compose_command_can_touch_what_the_colors_share() -> None:
    """In the project the colors share with the base, `down` would remove the shared network and
    `--remove-orphans` would remove the base and the live color."""
    stack = Compose("v2", "app", "/srv/app/docker-compose.blue.yml", "/srv/app")
    for argv in (stack.up_color(), stack.up_base(), stack.stop(["x"]), stack.logs(5)):
        assert "down" not in argv and "--remove-orphans" not in argv


def test_compose_detection_prefers_v2() -> None:
    assert commands.choose_compose(v2_works=True, v1_found=True) == "v2"
    assert commands.choose_compose(v2_works=False, v1_found=True) == "v1"
    assert commands.choose_compose(v2_works=False, v1_found=False) is None


def test_nginx_runs_in_the_container_or_on_the_host() -> None:
    assert commands.nginx("web", "-s", "reload") == ["docker", "exec", "web", "nginx", "-s", "reload"]
    assert commands.nginx("", "-t") == ["nginx", "-t"]
    assert commands.nginx_processes("web")[:3] == ["docker", "exec", "web"]


def test_git_commands_take_values_as_single_arguments() -> None:
    assert commands.git_checkout("/srv/my app", "abc") == [
        "git",
        "-C",
        "/srv/my app",
        "checkout",
        "--quiet",
        "--force",
        "--detach",
        "abc",
    ]
    assert commands.git_resolve("/srv/app", "refs/tags/v1") == [
        "git",
        "-C",
        "/srv/app",
        "rev-parse",
        "--verify",
        "--quiet",
        "refs/tags/v1^{commit}",
    ]
    assert commands.git_tracked_under("/srv/app", "abc", ".bluegreen")[-3:] == ["abc", "--", ".bluegreen"]


def test_a_fetch_prunes_branches_origin_deleted_and_moves_tags_origin_moved() -> None:
    argv = commands.git_fetch("/srv/app")
    assert {"--prune", "--force"} <= set(argv)
    assert argv[-3:] == ["origin", "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"]


def test_the_lock_is_held_by_flock_with_a_constant_script_and_no_clock() -> None:
    argv = commands.hold_lock("/srv/app/.bluegreen", 60)
    assert argv[:5] == ["flock", "--nonblock", "--conflict-exit-code", "1", "/srv/app/.bluegreen/lock"]
    assert argv[5:] == ["sh", "-c", commands.HOLD_LOCK_SCRIPT, "sh", "/srv/app/.bluegreen", "60"]
    assert "timeout" not in argv[:5] and commands.shell_line(argv).startswith("flock ")


def test_state_files_are_replaced_never_written_through_and_the_upstream_target_in_place() -> None:
    assert commands.write_file("/x y") == ["sh", "-c", commands.UMASK_TEE_SCRIPT, "sh", "/x y"]
    assert commands.UMASK_TEE_SCRIPT.startswith("umask 022 && exec tee ")
    assert commands.write_state("/s") == ["sh", "-c", commands.WRITE_STATE_SCRIPT, "sh", "/s", "0644"]
    assert 'mv -fT -- "$t" "$1"' in commands.WRITE_STATE_SCRIPT
    assert commands.append_line("/j") == ["sh", "-c", commands.APPEND_LINE_SCRIPT, "sh", "/j"]
    assert commands.APPEND_LINE_SCRIPT.startswith('if [ -L "$1" ]')
    assert commands.move("/a", "/b") == ["mv", "-fT", "--", "/a", "/b"]


def test_upstream_servers_are_probed_from_nginxs_own_view_with_a_constant_script() -> None:
    argv = commands.probe_servers("web", [("backend_blue", "8000"), ("unix", "/run/a.sock")])
    assert argv == [
        "docker",
        "exec",
        "web",
        "sh",
        "-c",
        commands.PROBE_SERVERS_SCRIPT,
        "sh",
        "backend_blue",
        "8000",
        "unix",
        "/run/a.sock",
    ]
    assert commands.probe_servers("", [("127.0.0.1", "8001")])[:2] == ["sh", "-c"]


def test_host_nginx_through_sudo_runs_only_nginx_under_sudo() -> None:
    assert commands.nginx("", "-T", sudo=True) == ["sudo", "-n", "nginx", "-T"]
    assert commands.nginx("web", "-T", sudo=True) == ["docker", "exec", "web", "nginx", "-T"]
    reload = commands.nginx_test_and_reload("", sudo=True, master=812)
    assert reload == ["sh", "-c", commands.TEST_AND_RELOAD_SCRIPT, "sh", "812", "sudo", "-n", "nginx"]
    assert commands.nginx_test_and_reload("web")[-3:] == ["sh", "", "nginx"]
    # nginx is only ever called as "$@" with -t, -s reload or -T
    calls = [part.split(" ", 1)[1].split(" ")[0:2] for part in commands.TEST_AND_RELOAD_SCRIPT.split('"$@"')[1:]]
    assert calls == [["-t", ">/dev/null"], ["-s", "reload"], ["-T", "2>/dev/null"]]
    assert "nginx -" not in commands.TEST_AND_RELOAD_SCRIPT


def test_a_colors_compose_runs_with_its_env_loaded_from_a_file_never_from_argv() -> None:
    plain = Compose("v2", "app", "/srv/app/b.yml", "/srv/app")
    loaded = Compose("v2", "app", "/srv/app/b.yml", "/srv/app", "/srv/app/.bluegreen/blue.environ")
    assert loaded.up_color() == [
        "sh",
        "-c",
        commands.LOAD_ENV_SCRIPT,
        "sh",
        "/srv/app/.bluegreen/blue.environ",
        *plain.up_color(),
    ]
    assert commands.write_state("/srv/app/.bluegreen/blue.env", "0600")[-2:] == ["/srv/app/.bluegreen/blue.env", "0600"]


def test_pruning_never_forces_and_the_build_cache_goes_only_by_age() -> None:
    assert commands.remove_images(["sha256:a"]) == ["docker", "image", "rm", "sha256:a"]
    assert commands.prune_build_cache() == ["docker", "builder", "prune", "--force", "--filter", "until=168h"]
