"""`surge status` and `surge cancel` against a real nats-server and worker."""

from __future__ import annotations

import asyncio

from typer.testing import CliRunner

from function.cli import full_app
from function.client import SurgeClient
from function.local.nats_server import EmbeddedNats
from tests.conftest import WorkerFactory
from tests.helpers import png_bytes

app = full_app()
runner = CliRunner()


async def _run(*args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(runner.invoke, app, list(args))
    return result.exit_code, result.output


async def test_status_and_cancel_of_queued_jobs_then_status_of_a_done_one(
    nats_server: EmbeddedNats, client: SurgeClient, start_worker: WorkerFactory
) -> None:
    url = ["--nats-url", nats_server.url]
    ids = [await client.submit(png_bytes(), function="tiny") for _ in range(4)]
    code, out = await _run("status", ids[0], *url)
    assert code == 0 and f"{ids[0]}\tqueued\ttiny (normal)" in out

    code, out = await _run("cancel", ids[0], *url)
    assert code == 0 and "\tcancelled\t" in out and "before any worker ran it" in out
    code, out = await _run("cancel", ids[0], "never-submitted", *url)
    assert code == 1  # one already cancelled, one unknown: neither cancelled now
    assert "already cancelled" in out and "never-submitted\tunknown" in out

    code, out = await _run("cancel", "--function", "tiny", "--all", "--priority", "normal", *url)
    assert code == 0, out
    assert "cancelled 3 job(s) of tiny: 3 never ran (work saved)" in out

    done_id = await client.submit(png_bytes(), function="tiny")
    await start_worker(function="tiny")
    code, out = await _run("status", done_id, "--wait", "--timeout", "30", *url)
    assert code == 0 and f"{done_id}\tdone" in out
    code, out = await _run("status", done_id, "--json", *url)
    assert code == 0 and '"state": "done"' in out and '"status": "ok"' in out
    code, out = await _run("status", ids[1], *url)
    assert code == 0 and "\tcancelled\t" in out and "called off" in out
    code, out = await _run("status", "never-submitted", *url)
    assert code == 1 and "\tunknown\t" in out


async def test_cancel_refuses_a_bad_id_or_a_mixed_request(nats_server: EmbeddedNats) -> None:
    url = ["--nats-url", nats_server.url]
    code, out = await _run("cancel", "a.*", *url)
    assert code == 2 and "JOB_IDS" in out
    code, out = await _run("cancel", "x", "--function", "tiny", "--all", *url)
    assert code == 2 and "not both" in out
    code, out = await _run("cancel", *url)
    assert code == 2
    code, out = await _run("status", ">", *url)
    assert code == 2 and "JOB_ID" in out
