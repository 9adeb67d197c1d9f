"""Surge's inference function: NATS JetStream jobs in, ONNX Runtime results out."""
