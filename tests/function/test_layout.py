"""The layout is a contract: each package's public names are pinned and its map is complete."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest

MAP_LINE = re.compile(r"^\s*(\w+) {2,}\S", re.MULTILINE)  # `module   what it does`

# A change here is a change to Surge's public API: make it on purpose.
PUBLIC = {
    "contract": (
        "ADVISORIES_STREAM",
        "ASYMMETRIC_ALGORITHMS",
        "CLOUDEVENTS_JSON",
        "CONSUMER_PREFIX",
        "DEAD_STREAM",
        "DEAD_SUBJECT_PREFIX",
        "DEFAULT_FUNCTION",
        "ENV_PREFIX",
        "FUNCTIONS",
        "HEARTBEAT_SUBJECT_PREFIX",
        "HTTP_AUTH_ENV_PREFIX",
        "JOBS_STREAM",
        "JOBS_SUBJECT_PREFIX",
        "MAX_CONTENT_TYPE_CHARS",
        "MAX_DEADLINE_CHARS",
        "MAX_DELIVERIES_ADVISORY_PREFIX",
        "MAX_JSON_DEPTH",
        "MAX_MESSAGE_CHARS",
        "MAX_OUTPUTS",
        "MAX_OUTPUT_NAME_CHARS",
        "MAX_REPLY_SUBJECT_CHARS",
        "OBJECT_STORE_BUCKET",
        "RESERVED_SUBJECT_PREFIXES",
        "RESULTS_STREAM",
        "RESULTS_SUBJECT_PREFIX",
        "SUPPORTED_IMAGE_TYPES",
        "BadInput",
        "CloudEvent",
        "DeadLetter",
        "ErrorCode",
        "ErrorInfo",
        "Header",
        "Heartbeat",
        "HttpAuthError",
        "HttpAuthSettings",
        "ImageOutput",
        "JobEnvelope",
        "JobError",
        "JobRequest",
        "JobStatus",
        "ModelInfo",
        "NatsAuth",
        "NatsAuthError",
        "NatsConnectError",
        "Output",
        "Priority",
        "Result",
        "ScoresOutput",
        "SurgeError",
        "Tenant",
        "TenantsFile",
        "Timings",
        "TransientError",
        "WorkerSettings",
        "WorkerState",
        "answer_address",
        "as_utc",
        "check_reply_subject",
        "clip",
        "consumer_name",
        "dead_subject",
        "derive_job_id",
        "heartbeat_subject",
        "is_valid_job_id",
        "job_headers",
        "job_id_for",
        "job_subject",
        "load_tenants",
        "loads_bounded",
        "max_deliveries_subject",
        "message_size",
        "parse_job",
        "parse_subject",
        "quote",
        "redact_url",
        "reply_subject_problem",
        "result_subject",
        "safe_reply_to",
        "servers_from",
        "sniff_image_type",
        "sweeper_name",
    ),
    "transport": (
        "ConnectionHealth",
        "HeartbeatPublisher",
        "OrphanSweeper",
        "Periodic",
        "PoisonSweeper",
        "PullFeed",
        "ResultStore",
        "Topology",
        "TopologyMismatch",
        "TopologyWatch",
        "Trouble",
        "connect_options",
        "consumer_config",
        "end_task",
        "ensure_blob_store",
        "ensure_consumers",
        "ensure_streams",
        "ensure_topology",
        "fetch_result",
        "jobs_subjects",
        "missing_topology",
        "open_nats",
        "stream_configs",
        "subject_matches",
        "sweeper_config",
        "tls_context",
    ),
    "engine": (
        "DEFAULT_PIXELS_PER_JOB",
        "SMALL_IMAGE_PIXELS",
        "SMALL_INPUT_BYTES",
        "Admission",
        "BatchModel",
        "Completion",
        "InFlightJob",
        "JobConsumer",
        "PixelBudget",
        "PriorityBatcher",
        "Settler",
        "pixel_budget",
        "run_in",
        "wall_ns",
    ),
    "models": (
        "BUILTIN_TASKS",
        "MODELS",
        "PHOTOS",
        "AssetError",
        "LoadedModel",
        "NsfwClassifier",
        "OnnxRunner",
        "PendingImage",
        "PreparedModel",
        "RemoveBackground",
        "Task",
        "TaskLoadError",
        "TinyTask",
        "UnknownFunction",
        "WarmupHook",
        "WheelAsset",
        "build_tiny_model",
        "decode_image",
        "encode_png",
        "fetch",
        "fetch_models",
        "fetch_photos",
        "load_and_warm",
        "load_model",
        "load_task",
        "open_image",
        "prepare_model",
    ),
    "http": (
        "AUTH_REQUESTS",
        "HTTP_STATUS",
        "MAX_TOKEN_CHARS",
        "STUCK_AFTER_S",
        "AuthRejected",
        "Authenticator",
        "Function",
        "FunctionServer",
        "Principal",
        "bearer_auth",
        "create_app",
        "new",
        "rejection_response",
        "serve",
    ),
    "local": (
        "CLUSTER_NAME",
        "LOCAL_USER",
        "EmbeddedCluster",
        "EmbeddedNats",
        "NatsServerError",
        "Pki",
        "Startable",
        "client_env",
        "embedded_server",
        "find_nats_server",
        "free_port",
        "local_secrets",
        "make_pki",
        "secure_server_config",
        "start_worker_process",
        "stop_worker_processes",
        "wait_ready",
    ),
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_public_names_are_pinned(package: str) -> None:
    module = importlib.import_module(f"function.{package}")
    assert tuple(module.__all__) == PUBLIC[package]
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_the_package_docstring_maps_every_module(package: str) -> None:
    module = importlib.import_module(f"function.{package}")
    doc = module.__doc__ or ""
    mapped = {match.group(1) for match in MAP_LINE.finditer(doc)}
    modules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    assert modules == mapped


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_every_module_declares_its_public_names(package: str) -> None:
    module = importlib.import_module(f"function.{package}")
    for info in pkgutil.iter_modules(module.__path__):
        sub = importlib.import_module(f"function.{package}.{info.name}")
        assert isinstance(getattr(sub, "__all__", None), list), sub.__name__
        assert all(hasattr(sub, name) for name in sub.__all__), sub.__name__
