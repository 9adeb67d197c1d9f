"""Fuzz: hundreds of malformed jobs against one real worker (issue 9).

Every case (tests/e2e/fuzz_cases.py) is published to `surge.jobs.normal.tiny` on a real
nats-server and must be answered, on its reply inbox or in the results stream, with an
error result carrying a specific code (never `max_deliver_exceeded` or
`inference_failed`), from one delivery that the worker terminated; afterwards the worker
still serves a valid job, is connected, ready, and nothing is left on its consumer.

A spy connection watches the worker's deliveries (`_INBOX.>`, by their `$JS.ACK` reply
subjects) and its acknowledgements (`$JS.ACK.>`), so redeliveries and naks are
seen per message without touching the worker's code.

    SURGE_FUZZ_SEED=7 SURGE_FUZZ_KINDS=reply-long,json-deep pytest tests/e2e/test_fuzz_worker.py -s
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from function.client import SurgeClient
from function.contract.parse import derive_job_id, is_valid_job_id, job_id_for
from function.contract.settings import (
    JOBS_STREAM,
    RESULTS_STREAM,
    RESULTS_SUBJECT_PREFIX,
    Header,
    Priority,
    consumer_name,
    job_subject,
)
from function.contract.wire import JobStatus, Result
from function.local.nats_server import EmbeddedNats
from function.transport.storage import fetch_result
from function.worker import Worker
from tests.conftest import WorkerFactory
from tests.e2e.fuzz_cases import (
    MAX_PAYLOAD,
    NOT_ANSWERS,
    Case,
    generate,
    kind_counts,
    wire_headers,
    wire_size,
)
from tests.helpers import png_bytes, settled_consumer

SEED = int(os.environ.get("SURGE_FUZZ_SEED", "20240909"))
KINDS = [k for k in os.environ.get("SURGE_FUZZ_KINDS", "").split(",") if k] or None
ANSWER_TIMEOUT_S = float(os.environ.get("SURGE_FUZZ_TIMEOUT_S", "30"))
FUNCTION = "tiny"
SUBJECT = job_subject(Priority.NORMAL, FUNCTION)
CONSUMER = consumer_name(FUNCTION, Priority.NORMAL)
MESSAGE_LIMIT = 2048  # "error messages never echo unbounded input"
FINAL_VERBS = ("+ACK", "+TERM")


def _ack_fields(subject: str) -> tuple[int, int] | None:
    """(delivery count, stream sequence) from a `$JS.ACK` subject (v1 or v2 form)."""
    tokens = subject.split(".")
    if len(tokens) == 9 and tokens[2] == JOBS_STREAM:
        return int(tokens[4]), int(tokens[5])
    if len(tokens) >= 11 and tokens[4] == JOBS_STREAM:
        return int(tokens[6]), int(tokens[7])
    return None


class Spy:
    """Sees every delivery of a SURGE_JOBS message and every ack/nak/term of one."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.deliveries: dict[int, list[int]] = defaultdict(list)
        self.settles: dict[int, list[tuple[int, str]]] = defaultdict(list)

    @classmethod
    async def start(cls, url: str) -> Spy:
        spy = cls(await nats.connect(url, name="surge-fuzz-spy"))
        await spy.nc.subscribe("_INBOX.>", cb=spy._on_delivery)
        await spy.nc.subscribe("$JS.ACK.>", cb=spy._on_ack)
        await spy.nc.flush()
        return spy

    async def _on_delivery(self, msg: Msg) -> None:
        fields = _ack_fields(msg.reply or "")
        if fields is not None:
            self.deliveries[fields[1]].append(fields[0])

    async def _on_ack(self, msg: Msg) -> None:
        fields = _ack_fields(msg.subject)
        if fields is not None:
            verb = msg.data.split(b" ", 1)[0].decode(errors="replace") or "+ACK"
            self.settles[fields[1]].append((fields[0], verb))

    def settled(self, seq: int) -> bool:
        return any(verb in FINAL_VERBS for _, verb in self.settles.get(seq, ()))

    def times_delivered(self, seq: int) -> int:
        seen = self.deliveries.get(seq, []) + [n for n, _ in self.settles.get(seq, [])]
        return max(seen, default=0)

    async def close(self) -> None:
        await self.nc.close()


class Inbox:
    """Every result that arrives on the fuzz reply subject, by job id."""

    def __init__(self) -> None:
        self.results: dict[str, list[Result]] = defaultdict(list)
        self.unparsable = 0

    async def on_msg(self, msg: Msg) -> None:
        try:
            result = Result.model_validate_json(msg.data)
        except ValueError:
            self.unparsable += 1
            return
        self.results[result.job_id].append(result)


@dataclass
class Sent:
    case: Case
    headers: dict[str, str]
    inbox: bool
    seq: int = 0
    refused: str = ""
    job_ids: tuple[str, ...] = ()
    answer: Result | None = None
    via: str = ""
    symptoms: list[tuple[str, str]] = field(default_factory=list)


def _headers_for(case: Case, index: int, inbox: str) -> tuple[dict[str, str], bool]:
    headers = dict(case.headers)
    if case.msg_id:
        headers.setdefault(Header.MSG_ID, f"fz-{SEED}-{index:04d}")
    uses_inbox = case.reply and Header.REPLY_TO not in headers
    if uses_inbox:
        headers[Header.REPLY_TO] = inbox
    return headers, uses_inbox


async def _publish(client: SurgeClient, sent: Sent) -> None:
    size = wire_size(sent.headers, sent.case.payload)
    if size > MAX_PAYLOAD:
        sent.refused = f"{size} bytes on the wire: the server would close the connection"
        return
    try:
        ack = await client.js.publish(SUBJECT, sent.case.payload, headers=sent.headers, timeout=5)
    except Exception as exc:  # nats-py refuses some things client-side: never reached a worker
        sent.refused = f"{type(exc).__name__}: {str(exc)[:80]}"
        return
    if ack.duplicate:
        sent.refused = "JetStream dropped it as a duplicate"
        return
    sent.seq = ack.seq
    seen = wire_headers(sent.headers)
    ids = [job_id_for(seen, JOBS_STREAM, ack.seq), derive_job_id(JOBS_STREAM, ack.seq)]
    ids += [v for v in (seen.get(Header.JOB_ID),) if v and is_valid_job_id(v)]
    sent.job_ids = tuple(dict.fromkeys(ids))


async def _wait_settled(spy: Spy, sent: list[Sent], timeout: float) -> float:
    start = time.monotonic()
    seqs = [s.seq for s in sent if s.seq]
    while time.monotonic() - start < timeout:
        if all(spy.settled(q) for q in seqs):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)  # replies published before the term are on their way
    return time.monotonic() - start


async def _judge(client: SurgeClient, spy: Spy, inbox: Inbox, sent: Sent) -> None:
    case, say = sent.case, sent.symptoms.append
    arrived = [r for job_id in sent.job_ids for r in inbox.results.get(job_id, [])]
    stored = None
    for job_id in sent.job_ids:
        stored = await fetch_result(client.js, job_id)
        if stored is not None:
            break
    sent.answer, sent.via = (arrived[0], "inbox") if arrived else (stored, "store")
    verbs = [verb for _, verb in spy.settles.get(sent.seq, [])]
    delivered = spy.times_delivered(sent.seq)
    if delivered > 1:
        say(("delivered more than once", f"{delivered}x, settles {verbs}"))
    if "-NAK" in verbs:
        say(("nak'd (retried)", f"{verbs.count('-NAK')} naks"))
    if not spy.settled(sent.seq):
        label = "delivered, never settled" if delivered else "never delivered"
        say((label, f"delivered {delivered}x, settles {verbs}"))
    answer = sent.answer
    if answer is None:
        say(("unanswered", f"no result under {[j[:40] for j in sent.job_ids]}; settles {verbs}"))
        return
    if sent.inbox and not arrived:
        say(("stored but not sent to its reply inbox", answer.status.value))
    if len(arrived) > 1:
        say(("answered more than once", f"{len(arrived)} replies"))
    if (
        stored is not None
        and arrived
        and (stored.status, stored.error)
        != (
            answer.status,
            answer.error,
        )
    ):
        say(("stored result differs from reply", f"{stored.error} vs {answer.error}"))
    if answer.attempts != 1:
        say(("attempts != 1", f"attempts={answer.attempts}"))
    if answer.status is JobStatus.OK:
        if not case.may_succeed:
            say(("status ok, want an error", f"want {'|'.join(sorted(case.codes))}"))
        return
    error = answer.error
    if error is None:
        say(("error without code", ""))
        return
    if error.code in NOT_ANSWERS:
        say((f"code {error.code.value}", error.message[:160]))
    elif error.code not in case.codes:
        say((f"code {error.code.value}, want {'|'.join(sorted(case.codes))}", error.message[:120]))
    if len(error.message) > MESSAGE_LIMIT:
        say(("error message echoes input", f"{len(error.message)} chars"))
    if "+TERM" not in verbs and "+ACK" in verbs:
        say(("acked, not terminated", str(verbs)))


def _code(result: Result) -> str:
    return result.error.code.value if result.error else result.status.value


def _table(sent: list[Sent]) -> str:
    by_kind: dict[str, list[Sent]] = defaultdict(list)
    for s in sent:
        by_kind[s.case.kind].append(s)
    lines = [f"{'kind':<28} {'cases':>5} {'sent':>5} {'fail':>5}  symptoms (count) / example"]
    for kind in sorted(by_kind):
        group = by_kind[kind]
        reached = [s for s in group if not s.refused]
        failed = [s for s in reached if s.symptoms]
        symptoms = Counter(label for s in failed for label, _ in s.symptoms)
        summary = "; ".join(f"{label} ({n})" for label, n in symptoms.most_common())
        answers = Counter(_code(s.answer) for s in reached if s.answer is not None)
        summary += f"{'; ' if summary else ''}answers: {dict(answers.most_common())}"
        lines.append(f"{kind:<28} {len(group):>5} {len(reached):>5} {len(failed):>5}  {summary}")
        if failed:
            first = failed[0]
            detail = " | ".join(f"{label}: {text}" for label, text in first.symptoms)
            lines.append(f"{'':<47}e.g. {first.case.describe()[:60]!r}: {detail[:300]}")
    return "\n".join(lines)


async def _serves_valid_job(client: SurgeClient, inbox: Inbox, reply: str) -> tuple[str, int]:
    """(problem or "", stream sequence) of one valid PNG job published after the fuzz."""
    job_id = f"fz-{SEED}-final"
    headers = {Header.MSG_ID: job_id, Header.REPLY_TO: reply, Header.CONTENT_TYPE: "image/png"}
    try:
        ack = await client.js.publish(SUBJECT, png_bytes(), headers=headers, timeout=5)
    except Exception as exc:
        return f"publishing a valid job failed: {exc!r}", 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if inbox.results.get(job_id):
            break
        await asyncio.sleep(0.05)
    pushed = inbox.results.get(job_id)
    result = pushed[0] if pushed else await fetch_result(client.js, job_id)
    if result is None:
        return "a valid PNG job after the fuzz got no answer in 15 s", ack.seq
    if result.status is not JobStatus.OK:
        return f"a valid PNG job after the fuzz failed: {result.error}", ack.seq
    if not pushed:
        return "a valid PNG job after the fuzz was stored but not sent to its inbox", ack.seq
    return "", ack.seq


async def _worker_health(worker: Worker) -> list[str]:
    problems = []
    nc = worker.nc
    if not worker.ready:
        problems.append(f"worker not ready (state {worker.state})")
    if nc is None or nc.is_closed or not nc.is_connected:
        problems.append("worker's NATS connection is not connected")
    elif nc.stats.get("reconnects", 0):
        problems.append(f"worker's NATS connection dropped {nc.stats['reconnects']} time(s)")
    failed = getattr(worker.consumer, "failed", None)
    if failed is not None:
        problems.append(f"worker's consumer loop died: {failed!r}")
    return problems


async def _stray(client: SurgeClient, spy: Spy, sent: list[Sent], ours: set[int]) -> list[str]:
    """Messages the worker wrote into Surge's own subjects (replies into the job stream, or
    over another job's result)."""
    problems = []
    strays = sorted(q for q in spy.deliveries if q not in ours)
    if strays:
        problems.append(f"{len(strays)} job(s) nobody published delivered (seqs {strays[:5]})")
    state = (await client.js.stream_info(JOBS_STREAM)).state
    if state.messages:
        problems.append(f"{state.messages} message(s) left on {JOBS_STREAM}")
    targets = {
        s.case.note.removeprefix("envelope ") for s in sent if s.case.kind == "reply-internal"
    }
    for subject in sorted(t for t in targets if t.startswith(RESULTS_SUBJECT_PREFIX + ".")):
        try:
            await client.js.get_last_msg(RESULTS_STREAM, subject)
            problems.append(f"a reply overwrote {subject} in {RESULTS_STREAM}")
        except NotFoundError:
            pass
    return problems


async def test_fuzz_malformed_jobs_are_answered_once_and_worker_keeps_serving(
    nats_server: EmbeddedNats, client: SurgeClient, start_worker: WorkerFactory
) -> None:
    started = time.monotonic()
    cases = generate(SEED, KINDS)
    counts = kind_counts(cases)
    print(f"\nfuzz seed {SEED}: {len(cases)} cases in {len(counts)} kinds")
    for kind, n in sorted(counts.items()):
        print(f"  {kind:<28} {n:>4}")
    worker = await start_worker(function=FUNCTION, warmup_batch_sizes=[], max_pixels=4_000_000)
    spy = await Spy.start(nats_server.url)
    inbox = Inbox()
    reply = client.nc.new_inbox()
    await client.nc.subscribe(reply, cb=inbox.on_msg)
    await client.nc.flush()
    sent: list[Sent] = []
    try:
        for index, case in enumerate(cases):
            headers, uses_inbox = _headers_for(case, index, reply)
            sent.append(Sent(case, headers, uses_inbox))
            await _publish(client, sent[-1])
        published = time.monotonic() - started
        waited = await _wait_settled(spy, sent, ANSWER_TIMEOUT_S)
        for s in sent:
            if not s.refused:
                await _judge(client, spy, inbox, s)
        final, final_seq = await _serves_valid_job(client, inbox, reply)
        problems = [final] if final else []
        info = await settled_consumer(client.js, CONSUMER, timeout=5)
        if info.num_pending or info.num_ack_pending or info.num_redelivered:
            problems.append(
                f"consumer not settled: pending {info.num_pending}, ack pending "
                f"{info.num_ack_pending}, redelivered {info.num_redelivered}"
            )
        problems += await _stray(client, spy, sent, {s.seq for s in sent} | {final_seq})
        problems += await _worker_health(worker)
        if inbox.unparsable:
            problems.append(f"{inbox.unparsable} reply(ies) on the inbox are not a Result")
    finally:
        await spy.close()

    refused = [s for s in sent if s.refused]
    failed = [s for s in sent if s.symptoms]
    answered = Counter(_code(s.answer) for s in sent if s.answer is not None)
    stuck = Counter(
        s.case.kind for s in sent if any(lb == "delivered, never settled" for lb, _ in s.symptoms)
    )
    report = "\n".join(
        [
            f"fuzz seed {SEED}: {len(sent)} cases, {len(sent) - len(refused)} reached the "
            f"worker, {len(refused)} refused client-side, {len(failed)} failed; published in "
            f"{published:.1f}s, settled in {waited:.1f}s, total {time.monotonic() - started:.1f}s",
            f"answers: {dict(answered.most_common())}",
            *(f"refused client-side: {s.case.describe()[:50]}: {s.refused}" for s in refused),
            _table(sent),
            *(f"WORKER: {p}" for p in problems),
            *(
                [
                    f"delivered but never settled, by kind (the culprits, or in flight with "
                    f"them): {dict(stuck.most_common())}; one kind alone: SURGE_FUZZ_KINDS=<kind>"
                ]
                if stuck
                else []
            ),
        ]
    )
    print(report)
    assert not failed and not problems, report
