"""Generated stubs for KEDA's `externalscaler` gRPC contract (see externalscaler.proto)."""
