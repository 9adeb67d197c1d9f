"""A webhook receiver for Surge's signed results: 200 for a genuine delivery, 401 otherwise.

    python examples/webhook_receiver.py --port 9000 --secret "$(surge tenants webhook-secret acme)"

Each delivery is a POST of the job's result JSON with `Surge-Signature: t=<unix
seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`. This receiver checks it with
`function.contract.webhooks.verify` over the raw body (before any JSON parsing): a
forged or changed body, another tenant's secret, or a timestamp more than five minutes
from this clock (a replay) is answered 401 and not used. A genuine one is printed and
answered 200; one whose job was already handled (a retry whose first answer was lost)
is answered 200 again and not handled twice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from function.contract.webhooks import BadSignature, verify

MAX_BODY_BYTES = 64 * 1024 * 1024

OnResult = Callable[[dict[str, object]], None]


def _print_result(result: dict[str, object]) -> None:
    error = result.get("error")
    detail = f" ({error})" if error else ""
    print(f"job {result.get('job_id')}: {result.get('status')}{detail}", flush=True)


def make_server(
    host: str, port: int, secret: bytes, on_result: OnResult = _print_result
) -> ThreadingHTTPServer:
    """A server (not yet serving) that hands each genuine result to `on_result`."""
    handled: set[str] = set()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, text: str) -> None:
            body = (text + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or "")
            except ValueError:
                self._answer(411, "a Content-Length is needed")
                return
            if not 0 <= length <= MAX_BODY_BYTES:
                self._answer(413, "too large")
                return
            body = self.rfile.read(length)
            try:
                verify(secret, self.headers.get("Surge-Signature"), body, now=time.time())
            except BadSignature as exc:
                self._answer(401, f"refused: {exc.reason}")
                return
            try:
                result = json.loads(body)
            except ValueError:
                result = None
            if not isinstance(result, dict):
                self._answer(400, "not a result")
                return
            job_id = str(result.get("job_id"))
            with lock:
                first = job_id not in handled
                handled.add(job_id)
            if first:
                on_result(result)
            self._answer(200, "ok" if first else "ok (already handled)")

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per result is printed by `on_result`

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument(
        "--secret",
        default=os.environ.get("SURGE_WEBHOOK_RECEIVER_SECRET"),
        help="the tenant's webhook secret (`surge tenants webhook-secret TENANT`); "
        "default: $SURGE_WEBHOOK_RECEIVER_SECRET",
    )
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("--secret is needed (or SURGE_WEBHOOK_RECEIVER_SECRET)")
    server = make_server(args.host, args.port, args.secret.encode())
    print(f"listening on http://{args.host}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
