"""What the manifests promise the rest of Surge, as constants the tests check against.

The HTTP endpoints are the function's contract (Knative Functions' Python
template serves the same health paths); `test_contract` also checks them against
`function/app.py` once that module exists.
"""

from __future__ import annotations

from typing import Final

HTTP_PORT: Final = 8080
LIVENESS_PATH: Final = "/health/liveness"
READINESS_PATH: Final = "/health/readiness"
METRICS_PATH: Final = "/metrics"

SCALER_GRPC_PORT: Final = 9090
SCALER_COMMAND: Final = ("surge", "scaler", "serve")
WORKER_COMMAND: Final = ("surge", "worker")
MODELS_COMMAND: Final = ("surge", "models", "fetch")

NAMESPACE: Final = "surge"
IMAGE_PLACEHOLDER: Final = "surge"  # what the manifests write; manifests/site sets the real one

KNATIVE_HPA_CLASS: Final = "hpa.autoscaling.knative.dev"
OVERRIDE_ANNOTATION: Final = "autoscaling.knative.dev/scaled-object-override"
GPU_RESOURCE: Final = "nvidia.com/gpu"

# Bound on one batch of the slowest deployed variant, used for the shutdown chain
# termination grace >= ack wait >= drain timeout >= longest batch. The CPU variant
# is the slow one: U²-Net-p takes ~0.15 s per 320² image on one CPU thread
# (DESIGN.md), so a full batch is max_batch * 0.15 s; x10 covers slower nodes.
CPU_SECONDS_PER_IMAGE: Final = 0.15
BATCH_SAFETY_FACTOR: Final = 10.0

# The KEDA scalers need these parameters from metadata or a TriggerAuthentication.
NATS_JETSTREAM_AUTH_PARAMS: Final = ("natsServerMonitoringEndpoint", "account")

# KEDA's external-push trigger takes these from a TriggerAuthentication for (mutual) TLS.
KEDA_TLS_PARAMS: Final = ("caCert", "tlsClientCert", "tlsClientKey")
