"""Surge's scaling brain.

Watches each function's JetStream consumers (`watcher`), turns what it sees into a
replica demand (`policy`, pure), and serves it to KEDA as an `external-push` scaler
over gRPC (`server`); the embedded stack follows the same decisions with local worker
processes (`local`, `stack`). Pre-warm plans for known campaigns live in NATS KV
(`prewarm`). See scaler/README.md.
"""
