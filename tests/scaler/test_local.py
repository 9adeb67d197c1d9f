"""The embedded stack: real worker processes started from zero and drained back to zero."""

from __future__ import annotations

import signal

import pytest

from function.local.nats_server import EmbeddedNats
from scaler.local import LocalConfig
from scaler.stack import spike_demo
from tests.helpers import png_bytes

pytestmark = pytest.mark.timeout(90)


async def test_embedded_stack_scales_from_zero_under_a_burst_and_back(
    nats_server: EmbeddedNats, tmp_path
) -> None:
    config = LocalConfig(
        function="tiny",
        max_workers=2,
        max_starting=2,  # both at once: tiny drains 40 jobs before a second would start
        cooldown_s=1.0,
        log_dir=tmp_path / "logs",
        worker_env={"SURGE_MODEL_DIR": str(tmp_path / "models")},
        # 40 jobs at 5 jobs/s per replica within 2 s: 4 replicas, capped at 2
        metadata={"replicaThroughput": "5", "targetDrainSeconds": "2", "coldStartSeconds": "2"},
    )
    report = await spike_demo(
        nats_server.url, config, jobs=40, spread_s=0.0, payloads=[png_bytes()], wait_s=60
    )
    assert report.timeline[0][1] == 0  # idle: no worker before the first job
    assert (report.answered, report.ok) == (40, 40)  # every job answered
    assert report.peak_replicas == 2  # scaled up to the cap under the burst
    assert report.first_result_s is not None and report.all_results_s is not None
    assert report.back_to_zero_s is not None  # and drained back to zero
    assert report.timeline[-1][1] == 0
    # both workers were asked to stop (SIGTERM) and exited by themselves, never killed
    # (uvicorn re-raises SIGTERM after its graceful shutdown: -15 is a clean drain)
    assert sorted(n for n, _, asked in report.worker_exits if asked) == [1, 2]
    assert all(code in (0, -signal.SIGTERM) for _, code, _ in report.worker_exits)
