from __future__ import annotations

from bluegreen.health import probe_pause


def test_health_probes_start_fast_and_back_off_to_the_interval() -> None:
    assert [probe_pause(n, 2) for n in range(5)] == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert probe_pause(0, 1) == 0.25 and probe_pause(9, 1) == 1.0
