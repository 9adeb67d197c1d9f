"""What mutual TLS and a password cost a round trip: `python -m loadgen.bench.tls`.

Two nats-servers in one run, one open and one with mutual TLS and a password
(`surge nats --secure`'s settings, throw-away certificates), each with one `tiny`
worker process. On each: bare nats-py request/reply to an in-process echo (the
baseline), then Surge round trips (publish a job, wait for its result), one at a time.
Prints p50/p99 and the ratios secured/open.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from function.contract.nats_auth import NatsAuth
from function.local.nats_server import EmbeddedNats
from function.local.processes import wait_ready
from function.local.throwaway_pki import (
    LOCAL_USER,
    client_env,
    local_secrets,
    secure_server_config,
)
from loadgen.bench.baselines import bare_request_reply
from loadgen.bench.workers import WorkerProcess, surge_round_trips
from loadgen.run.runner import tiny_png

__all__ = ["Side", "main", "measure"]

console = Console()
MODEL_DIR = Path(os.environ.get("SURGE_MODEL_DIR", ".cache/surge/models")).resolve()


@dataclass(frozen=True)
class Side:
    """Round-trip milliseconds on one server."""

    name: str
    bare: list[float]
    surge: list[float]

    def p(self, which: str, q: float) -> float:
        return float(np.percentile(self.bare if which == "bare" else self.surge, q))


async def _measure_side(
    name: str, url: str, env: dict[str, str], auth: NatsAuth, count: int, logs: Path
) -> Side:
    worker_env = {
        **env,
        "SURGE_MODEL_DIR": str(MODEL_DIR),
        "SURGE_LOG_LEVEL": "WARNING",
        "SURGE_WARMUP_BATCH_SIZES": "[1]",
    }
    worker = WorkerProcess(url, "tiny", logs / f"worker-{name}.log", worker_env).start()
    try:
        await wait_ready(url, "tiny", 1, timeout=120, auth=auth)
        payload = tiny_png()
        await surge_round_trips(url, 20, payload, auth)  # warm the path
        bare = await bare_request_reply(url, count, payload, auth)
        surge = await surge_round_trips(url, count, payload, auth)
    finally:
        worker.stop()
    return Side(name, bare, surge)


def measure(count: int, folder: Path) -> tuple[Side, Side]:
    """Open and secured round trips, in that order, in one run."""
    pki, password = local_secrets(folder / "secrets")
    with EmbeddedNats(store_dir=folder / "open") as server:
        opened = asyncio.run(_measure_side("open", server.url, {}, NatsAuth(), count, folder))
    config = secure_server_config(pki, password)
    with EmbeddedNats(store_dir=folder / "tls", extra_config=config) as server:
        env = client_env(pki, password, server.url)
        auth = NatsAuth(
            user=LOCAL_USER,
            password_file=password,
            tls_ca=pki.ca,
            tls_cert=pki.client_cert,
            tls_key=pki.client_key,
        )
        secured = asyncio.run(_measure_side("tls", server.url, env, auth, count, folder))
    return opened, secured


def _table(open_side: Side, tls_side: Side) -> Table:
    table = Table(title="round trip, ms (one job at a time, tiny)")
    for column in ("path", "open p50", "mTLS p50", "ratio", "open p99", "mTLS p99", "ratio"):
        table.add_column(column, justify="right" if column != "path" else "left")
    for which, label in (("bare", "bare nats-py request/reply"), ("surge", "Surge job")):
        o50, t50 = open_side.p(which, 50), tls_side.p(which, 50)
        o99, t99 = open_side.p(which, 99), tls_side.p(which, 99)
        table.add_row(
            label,
            f"{o50:.2f}",
            f"{t50:.2f}",
            f"{t50 / o50:.2f}",
            f"{o99:.2f}",
            f"{t99:.2f}",
            f"{t99 / o99:.2f}",
        )
    return table


def bench(
    count: Annotated[int, typer.Option(min=50, help="Round trips per path and server.")] = 500,
) -> None:
    """Round trips with and without mutual TLS + password, side by side."""
    with (
        tempfile.TemporaryDirectory(prefix="surge-tls-bench-") as folder,
        console.status(f"{count} round trips per path, open then mutual TLS"),
    ):
        open_side, tls_side = measure(count, Path(folder))
    console.print(_table(open_side, tls_side))
    console.print(f"machine: {os.cpu_count()} CPUs; one run; both servers on loopback")


def main() -> None:
    """`python -m loadgen.bench.tls`."""
    typer.run(bench)


if __name__ == "__main__":
    main()
