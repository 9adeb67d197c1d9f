"""`DeadLetters`: reading, finding, retrying and removing dead letters on a real server;
the retry id, headers and payload rules on their own."""

from __future__ import annotations

import base64
import os

import pytest

from function.client import SurgeClient
from function.contract.errors import ErrorCode
from function.contract.quota import TenantQuota
from function.contract.settings import (
    DEAD_STREAM,
    JOBS_STREAM,
    Header,
    WorkerSettings,
    job_subject,
    tenant_stream,
)
from function.contract.wire import DeadLetter, ErrorInfo
from function.transport.deadletters import (
    DeadEntry,
    DeadLetters,
    NotRetryable,
    first_job_id,
    payload_of,
    retried_as,
    retry_headers,
    retry_ids,
)
from function.transport.records import read_record
from function.transport.tenants import add_tenant
from tests.dead_letters import write_dead_letter
from tests.helpers import png_bytes


def _letter(job_id: str = "job-1", **fields: object) -> DeadLetter:
    values: dict[str, object] = {
        "job_id": job_id,
        "function": "tiny",
        "original_subject": job_subject("normal", "tiny"),
        "attempts": 3,
        "last_error": ErrorInfo(code=ErrorCode.INFERENCE_FAILED, message="boom"),
        "payload_b64": base64.b64encode(b"png").decode(),
        "payload_bytes": 3,
    }
    return DeadLetter.model_validate({**values, **fields})


# -- the rules, without a server --------------------------------------------------------


def test_a_retry_counts_on_from_the_first_job_and_a_forged_retry_of_is_ignored() -> None:
    assert first_job_id(_letter("a")) == "a"
    assert first_job_id(_letter("a-r2", headers={Header.RETRY_OF: "a"})) == "a"
    # A client's own header that its id does not bear out names nothing.
    assert first_job_id(_letter("b", headers={Header.RETRY_OF: "a"})) == "b"
    assert first_job_id(_letter("a-r2", headers={Header.RETRY_OF: "a.>"})) == "a-r2"


def test_retry_ids_are_numbered_then_fresh_when_they_would_not_fit() -> None:
    ids = retry_ids("a")
    assert [next(ids), next(ids)] == ["a-r2", "a-r3"]
    long = retry_ids("x" * 254)  # `-r2` would pass the 256 characters of a job id
    fresh = next(long)
    assert len(fresh) == 32 and int(fresh, 16) >= 0
    numbered = list(zip(range(1200), retry_ids("a"), strict=False))
    assert numbered[998][1] == "a-r1000" and not numbered[999][1].startswith("a-r")


def test_retry_headers_drop_jetstreams_and_name_the_first_job() -> None:
    letter = _letter(
        headers={
            Header.MSG_ID: "job-1",
            "Nats-Expected-Last-Sequence": "7",
            Header.CONTENT_TYPE: "image/png",
            Header.REPLY_TO: "_INBOX.x",
        }
    )
    assert retry_headers(letter, "job-1") == {
        Header.CONTENT_TYPE: "image/png",
        Header.REPLY_TO: "_INBOX.x",
        Header.RETRY_OF: "job-1",
    }


def test_a_dropped_or_unreadable_payload_cannot_be_retried() -> None:
    assert payload_of(_letter()) == b"png"
    dropped = _letter(payload_b64="", payload_bytes=2_000_000, payload_dropped=True)
    with pytest.raises(NotRetryable, match=r"job job-1: its payload \(2000000 bytes\) was drop"):
        payload_of(dropped)
    with pytest.raises(NotRetryable, match="unreadable"):
        payload_of(_letter(payload_b64="not base64!"))


async def test_a_letter_whose_subject_is_not_its_jobs_is_refused() -> None:
    entry = DeadEntry(1, _letter(original_subject="surge.results.x"), None)

    async def never(*args: object) -> bool:
        raise AssertionError("published")

    with pytest.raises(NotRetryable, match="names no job subject"):
        await DeadLetters(None).retry(entry, never)  # type: ignore[arg-type]
    entry = DeadEntry(1, _letter(original_subject=job_subject("normal", "nsfw")), None)
    with pytest.raises(NotRetryable, match="names no job subject"):
        await DeadLetters(None).retry(entry, never)  # type: ignore[arg-type]


# -- on a real server -------------------------------------------------------------------


async def test_no_streams_means_no_letters(client: SurgeClient) -> None:
    dead = DeadLetters(client.js)
    assert await dead.oldest() == [] and await dead.find(["a"]) == {}


async def test_letters_are_listed_oldest_first_by_function_and_tenant(
    client: SurgeClient,
) -> None:
    for job_id, function, tenant in [
        ("a", "tiny", None),
        ("b", "nsfw", None),
        ("c", "tiny", "acme"),
        ("d", "tiny", None),
    ]:
        await write_dead_letter(client, job_id, function=function, tenant=tenant)
    dead = DeadLetters(client.js)
    assert [e.letter.job_id for e in await dead.oldest()] == ["a", "b", "c", "d"]
    assert [e.letter.job_id for e in await dead.oldest("tiny")] == ["a", "c", "d"]
    assert [e.letter.job_id for e in await dead.oldest("tiny", limit=2)] == ["a", "c"]
    entry = (await dead.oldest())[0]
    assert entry.written_at is not None and entry.letter.payload_b64
    assert [e.letter.job_id for e in await DeadLetters(client.js, "acme").oldest()] == ["c"]
    found = await dead.find(["b", "d", "zz"])
    assert sorted(found) == ["b", "d"]


async def test_a_walk_ends_where_the_stream_ended_when_it_began(client: SurgeClient) -> None:
    await write_dead_letter(client, "a")
    await write_dead_letter(client, "b")
    seen = []
    async for entry in DeadLetters(client.js).scan():
        seen.append(entry.letter.job_id)
        await write_dead_letter(client, f"later-{entry.letter.job_id}")  # e.g. failed again
    assert seen == ["a", "b"]


async def test_one_id_of_two_tenants_must_be_named(client: SurgeClient) -> None:
    await write_dead_letter(client, "same")
    await write_dead_letter(client, "same", tenant="acme")
    dead = DeadLetters(client.js)
    with pytest.raises(NotRetryable, match=r"several tenants \(-, acme\)"):
        dead.pick("same", (await dead.find(["same"]))["same"])
    acme = DeadLetters(client.js, "acme")
    entries = (await acme.find(["same"]))["same"]
    assert acme.pick("same", entries).letter.tenant == "acme"


async def test_retry_publishes_the_payload_under_a_new_id_with_a_ticket(
    client: SurgeClient,
) -> None:
    image = png_bytes()
    await write_dead_letter(client, "job-1", payload=image, headers={Header.REPLY_TO: "_INBOX.x"})
    dead = DeadLetters(client.js)
    [entry] = await dead.oldest()
    assert await dead.retry(entry, client.resubmit, keep=True) == "job-1-r2"
    job = await client.js.get_last_msg(JOBS_STREAM, job_subject("normal", "tiny"))
    headers = job.headers or {}
    assert job.data == image
    assert headers[Header.MSG_ID] == "job-1-r2" and headers[Header.RETRY_OF] == "job-1"
    assert headers[Header.CONTENT_TYPE] == "image/png"
    record = await read_record(client.js, "job-1-r2", None)
    assert record is not None and record.ticket is not None
    assert record.ticket.sequence == job.seq and record.ticket.reply_to == "_INBOX.x"
    assert [e.letter.job_id for e in await dead.oldest()] == ["job-1"]  # kept

    # Taken ids are skipped: a ticket (`-r3` submitted by someone), and a job that
    # JetStream still de-duplicates though it has no ticket (`-r4`, published bare).
    await client.submit(image, function="tiny", job_id="job-1-r3")
    await client.js.publish(
        job_subject("normal", "tiny"), image, headers={Header.MSG_ID: "job-1-r4"}
    )
    assert await dead.retry(entry, client.resubmit) == "job-1-r5"
    assert await dead.oldest() == []  # deleted once retried
    assert await dead.remove(entry) is False
    assert await retried_as(client.js, "job-1", None) == "job-1-r5"
    assert await retried_as(client.js, "other", None) is None


async def test_a_retry_of_a_retry_counts_on_from_the_first_job(client: SurgeClient) -> None:
    await write_dead_letter(client, "a-r2", headers={Header.RETRY_OF: "a"})
    dead = DeadLetters(client.js)
    [entry] = await dead.oldest()
    await client.submit(png_bytes(), function="tiny", job_id="a-r2")  # its record
    assert await dead.retry(entry, client.resubmit) == "a-r3"


async def test_a_tenants_job_is_retried_on_its_tenants_stream(client: SurgeClient) -> None:
    await add_tenant(client.js, "acme", TenantQuota(), WorkerSettings())
    await write_dead_letter(client, "t-1", tenant="acme")
    dead = DeadLetters(client.js)  # an operator's view
    [entry] = await dead.oldest()
    assert await dead.retry(entry, client.resubmit) == "t-1-r2"
    job = await client.js.get_last_msg(tenant_stream("acme"), job_subject("normal", "tiny", "acme"))
    assert (job.headers or {})[Header.MSG_ID] == "acme:t-1-r2"
    record = await read_record(client.js, "t-1-r2", "acme")
    assert record is not None and record.ticket is not None
    assert record.ticket.tenant == "acme" and record.ticket.stream == tenant_stream("acme")


async def test_a_letter_too_large_for_the_server_keeps_no_payload(client: SurgeClient) -> None:
    await write_dead_letter(client, "big", payload=os.urandom(900_000))  # max_payload 1 MiB
    dead = DeadLetters(client.js)
    [entry] = await dead.oldest()
    assert entry.letter.payload_dropped
    with pytest.raises(NotRetryable, match=r"job big: its payload .* dropped"):
        await dead.retry(entry, client.resubmit)
    info = await client.js.stream_info(DEAD_STREAM)
    assert info.state.messages == 1  # still there: nothing was retried
