"""A webhook delivery owed by a worker that stopped before delivering it is claimed from
the outbox and delivered by another worker, with the stored result's exact bytes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from pydantic import SecretStr

from function.contract.settings import WorkerSettings, result_subject
from function.contract.webhooks import WEBHOOKS_BUCKET, tenant_secret, verify
from function.contract.wire import JobStatus, Result
from function.local.nats_server import EmbeddedNats
from function.transport.topology import ensure_streams
from function.transport.webhooks import WebhookSender, outbox_key, read_webhook

MASTER = "outbox-master-secret"


class HangsFirst:
    """A real HTTP server on 127.0.0.1: the first POST never gets an answer in time, the
    rest get 200; every body and header set is kept."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.first = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if len(owner.got) == 1:
                    owner.first.set()
                    time.sleep(1.5)  # the first worker is stopped while it waits
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = False  # closing waits for the slow handler
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def hangs_first() -> Iterator[HangsFirst]:
    receiver = HangsFirst()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    connection = await nats.connect(nats_server.url)
    yield connection
    await connection.close()


async def test_a_delivery_a_stopped_worker_owed_is_delivered_by_another(
    nats_server: EmbeddedNats, nc: NATS, hangs_first: HangsFirst
) -> None:
    settings = WorkerSettings(
        nats_url=nats_server.url,
        webhook_secret=SecretStr(MASTER),
        webhook_allow_hosts=["127.0.0.1"],
        webhook_attempts=3,
        webhook_backoff_s=0.05,
        webhook_timeout_s=10,
    )
    js = nc.jetstream()
    await ensure_streams(js, settings)
    stored = Result(job_id="owed-1", status=JobStatus.OK, function="tiny").model_dump_json()
    await js.publish(result_subject("owed-1"), stored.encode())

    first = WebhookSender(nc, settings, worker="first")
    first.start()
    await first.hold([("owed-1", None, hangs_first.url, stored.encode())])
    assert await asyncio.to_thread(hangs_first.first.wait, 10)  # its POST is under way...
    await first.stop(timeout=0.1)  # ...when the worker stops: the delivery is owed still
    bucket = await js.key_value(WEBHOOKS_BUCKET)
    owed = await bucket.get(outbox_key("owed-1", None))
    assert owed.value is not None and b'"worker":"first"' in owed.value

    live = WebhookSender(nc, settings, worker="live")  # default staleness: not yet stale
    assert await live.sweep() == 0

    second = WebhookSender(nc, settings, worker="second", stale_s=0.0)
    second.start()  # it sweeps at start too: the entry is claimed once, whichever sweep wins
    await second.sweep()
    deadline = time.monotonic() + 10
    while len(hangs_first.got) < 2:
        assert time.monotonic() < deadline, "never delivered again"
        await asyncio.sleep(0.02)
    headers, body = hangs_first.got[1]
    assert body == stored.encode()  # the stored bytes, signed for the open jobs' secret
    verify(tenant_secret(MASTER.encode(), None), headers["surge-signature"], body, now=time.time())
    while (record := await read_webhook(js, "owed-1", None)) is None or record.state != "delivered":
        assert time.monotonic() < deadline, record
        await asyncio.sleep(0.02)
    await second.stop()
    with pytest.raises((KeyNotFoundError, KeyDeletedError)):  # nothing owed any more
        await bucket.get(outbox_key("owed-1", None))
    assert second.recovered == 1 and len(hangs_first.got) == 2  # claimed and sent once
