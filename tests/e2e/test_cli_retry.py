"""`surge retry` and `surge dead list|show|retry` against a real nats-server and workers."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from typer.testing import CliRunner

from function.cli import full_app
from function.client import SurgeClient
from function.contract.errors import ErrorCode
from function.contract.settings import JOBS_STREAM, Header, job_subject
from function.contract.wire import JobStatus
from function.local.nats_server import EmbeddedNats
from tests.conftest import WorkerFactory
from tests.dead_letters import write_dead_letter
from tests.helpers import failing_model, png_bytes

app = full_app()
runner = CliRunner()


class Ran:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr


async def _run(*args: str) -> Ran:
    result = await asyncio.to_thread(runner.invoke, app, list(args))
    return Ran(result.exit_code, result.stdout, result.stderr)


async def test_dead_list_show_and_retry_then_a_worker_answers_the_new_jobs(
    nats_server: EmbeddedNats, client: SurgeClient, start_worker: WorkerFactory
) -> None:
    url = ["--nats-url", nats_server.url]
    image = png_bytes()
    await write_dead_letter(client, "job-a", payload=image)
    await write_dead_letter(client, "job-big", payload=os.urandom(900_000))  # dropped

    ran = await _run("dead", "list", *url)
    assert ran.code == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0].startswith(
        f"job-a\ttiny\t-\t3 attempt(s)\tinference_failed: RuntimeError: CUDA out of memory"
        f"\t{len(image)} bytes\tdead-lettered "
    )
    assert lines[1].startswith("job-big\ttiny\t-\t") and "\tpayload dropped\t" in lines[1]
    ran = await _run("dead", "list", "--limit", "1", *url)
    assert len(ran.stdout.splitlines()) == 1 and "showing the oldest 1" in ran.stderr
    ran = await _run("dead", "list", "--function", "nsfw", *url)
    assert ran.code == 0 and ran.stdout == "" and "no dead letters for nsfw" in ran.stderr
    ran = await _run("dead", "list", "--json", *url)
    listed = json.loads(ran.stdout)
    assert [d["job_id"] for d in listed] == ["job-a", "job-big"]
    assert listed[0]["payload_b64"] == f"<{len(image)} bytes, elided>"

    ran = await _run("dead", "show", "job-a", *url)
    shown = json.loads(ran.stdout)
    assert ran.code == 0 and shown["job_id"] == "job-a" and shown["attempts"] == 3
    assert shown["payload_b64"] == f"<{len(image)} bytes, elided>" and shown["sequence"] == 1

    ran = await _run("retry", "job-a", "--keep", *url)
    assert (ran.code, ran.stdout) == (0, "job-a\tretried as job-a-r2\n")
    job = await client.js.get_last_msg(JOBS_STREAM, job_subject("normal", "tiny"))
    assert job.data == image and (job.headers or {})[Header.RETRY_OF] == "job-a"
    ran = await _run("dead", "retry", "job-a", *url)  # kept: it can be retried again
    assert (ran.code, ran.stdout) == (0, "job-a\tretried as job-a-r3\n")
    ran = await _run("dead", "show", "job-a", *url)
    assert ran.code == 1 and "no dead letter for job job-a" in ran.stderr

    await start_worker(function="tiny", warmup_batch_sizes=[])
    for new_id in ("job-a-r2", "job-a-r3"):
        ran = await _run("status", new_id, "--wait", "--timeout", "30", *url)
        assert ran.code == 0 and f"{new_id}\tdone\ttiny\t1 output(s)" in ran.stdout, ran.stdout

    ran = await _run("retry", "job-big", *url)
    assert ran.code == 1 and ran.stdout == ""
    assert "job job-big: its payload (900000 bytes) was dropped" in ran.stderr
    assert "submit the input again" in ran.stderr

    # A job that failed on bad input was answered and dropped: nothing to retry.
    inbox = await client.inbox()
    bad = await client.submit(b"not an image", function="tiny", reply_to=inbox.subject)
    answered = (await inbox.wait([bad], timeout=30))[bad]
    assert answered.error is not None and answered.error.code is ErrorCode.BAD_IMAGE
    ran = await _run("retry", bad, *url)
    assert ran.code == 1
    assert f"job {bad} failed (bad_image): no payload kept: only dead-lettered jobs can be " in (
        ran.stderr
    )
    ran = await _run("retry", "job-a-r2", *url)
    assert ran.code == 1 and "job job-a-r2 is done: nothing to retry" in ran.stderr
    ran = await _run("retry", "never-was", *url)
    assert ran.code == 1 and "job never-was: no dead letter and no record" in ran.stderr

    # A campaign's letters at once: every one of a function's, no other function's.
    for job_id in ("c-1", "c-2"):
        await write_dead_letter(client, job_id)
    await write_dead_letter(client, "n-1", function="nsfw")
    ran = await _run("dead", "retry", "--function", "tiny", "--all", *url)
    assert ran.code == 1  # job-big cannot be retried, and is named
    assert ran.stdout == "c-1\tretried as c-1-r2\nc-2\tretried as c-2-r2\n"
    assert "job job-big: its payload" in ran.stderr
    ran = await _run("dead", "list", *url)
    assert [line.split("\t")[0] for line in ran.stdout.splitlines()] == ["job-big", "n-1"]
    ran = await _run("status", "c-2-r2", "--wait", "--timeout", "30", *url)
    assert ran.code == 0 and "c-2-r2\tdone" in ran.stdout


async def test_retry_refuses_bad_ids_and_mixed_requests(nats_server: EmbeddedNats) -> None:
    url = ["--nats-url", nats_server.url]
    ran = await _run("retry", "a.b", *url)
    assert ran.code == 2 and "JOB_IDS" in ran.stderr
    ran = await _run("dead", "retry", "x", "--function", "tiny", "--all", *url)
    assert ran.code == 2 and "not both" in ran.stderr
    ran = await _run("dead", "retry", *url)
    assert ran.code == 2
    ran = await _run("dead", "show", "a>b", *url)
    assert ran.code == 2 and "JOB_ID" in ran.stderr
    ran = await _run("dead", "list", *url)  # a fresh server: no streams, no letters
    assert ran.code == 0 and "no dead letters" in ran.stderr


async def test_a_job_a_worker_dead_lettered_is_retried_and_answered(
    nats_server: EmbeddedNats, client: SurgeClient, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    url = ["--nats-url", nats_server.url]
    failing = await start_worker(
        function="tiny",
        model_path=failing_model(tmp_path / "fails.onnx"),
        max_deliver=2,
        nak_delay_s=0.05,
        warmup_batch_sizes=[],
    )
    inbox = await client.inbox()
    job_id = await client.submit(png_bytes(), function="tiny", reply_to=inbox.subject)
    failed = (await inbox.wait([job_id], timeout=30))[job_id]
    assert failed.error is not None and failed.error.code is ErrorCode.MAX_DELIVER_EXCEEDED
    await failing.stop(timeout=10)

    ran = await _run("dead", "list", *url)
    assert ran.stdout.startswith(f"{job_id}\ttiny\t-\t2 attempt(s)\tinference_failed: ")
    await start_worker(function="tiny", max_deliver=2, warmup_batch_sizes=[])
    ran = await _run("retry", job_id, *url)
    assert (ran.code, ran.stdout) == (0, f"{job_id}\tretried as {job_id}-r2\n"), ran.stderr
    ran = await _run("status", f"{job_id}-r2", "--wait", "--timeout", "30", *url)
    assert ran.code == 0 and f"{job_id}-r2\tdone" in ran.stdout
    retried = await client.result(f"{job_id}-r2")
    assert retried is not None and retried.status is JobStatus.OK
    original = await client.result(job_id)  # history: the original's answer stands
    assert original is not None and original.status is JobStatus.ERROR

    ran = await _run("retry", job_id, *url)
    assert ran.code == 1
    assert f"its dead letter is gone: it was retried as {job_id}-r2" in ran.stderr
    ran = await _run("dead", "list", *url)
    assert ran.stdout == "" and "no dead letters" in ran.stderr
