"""The demo: a seed-shaped app with green v1 live on the local lab host, deployed to v2 by the action.

Run by scripts/demo after scripts/bootstrap. Prints the action's log and its job summary; leaves the
app running so it can be tried with curl."""

from __future__ import annotations

import sys

from lab import lab


def main() -> int:
    print("demo: building the action image (docker build of this repo's Dockerfile)")
    lab.build_action_image()
    host = lab.start_sshd()
    try:
        app = lab.LabApp("bgdemo", lab.LAB_ROOT / "app-bgdemo", {})
        app.teardown()
        lab.use_compose("v2")
        app = lab.make_app("bgdemo", variant="bridge")
        print(
            f"demo: app-dir {app.app_dir} on deploy@127.0.0.1:{host.port}, the seed's layout (one compose project: "
            "db and the colors by service name, a shared static volume); green v1 goes live the way the seed's "
            "script would"
        )
        app.bootstrap("green")
        sha = app.version("v2")
        print(f"demo: committed v2 ({sha[:12]}); running the action as GitHub's runner runs it\n")
        run = lab.run_action(lab.lab_inputs(host, app, sha))
        print("\n".join(run.shown))
        print("=" * 30 + " job summary (GITHUB_STEP_SUMMARY) " + "=" * 30)
        print(run.summary)
        print("outputs:", " ".join(f"{k}={v}" for k, v in run.outputs.items()))
        with lab.urllib_open(app.public_url("/api/v1/")) as response:
            print(f"\ncurl {app.public_url('/api/v1/')}  ->  {response.read().decode()}")
        print(f"curl {app.public_url('/static/version.txt')}  ->  {app.static_file()}")
        return run.status
    finally:
        host.stop()


if __name__ == "__main__":
    sys.exit(main())
