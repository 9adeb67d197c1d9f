"""One job's life, from its message to its settled outcome. Follow a job through
`consumer` (the map), `job` (admission), `finish` (after inference), `settle` (the one
place a job ends) and `function.transport.storage` (where its result lands).

    consumer    the pull loop: fetch (high before normal), admit, batch, infer, finish
    job         `Admission`: parse, replay, read, decode, or settle a job early
    inflight    `InFlightJob`: a message not yet settled, its timings, span and sample
    finish      `Completion`: postprocess a batch's jobs, then settle each
    settle      `Settler`: store, reply, ack (confirmed); or fail, nak, dead-letter, hand back
    keepalive   `keep_alive`: the jobs in hand are kept from redelivery while worked on
    control     `JobControl`: answers status and cancel questions about the jobs held
    direct      `DirectInference`: one HTTP job outside the queue, same model and budget
    screen      `Screening`: a cheaper model's score rejects a job before the main model
    screen_queue  `ScreenGate`: the screen function's own workers score each job first
    jobmetrics  `JobMetrics`: the per-job Prometheus series, labels resolved once
    accounting  `BusyClock` and `WarmMeter`: busy, idle-but-warm and cold-start seconds
    feeds       one pull feed per priority and source (open jobs, each tenant)
    batcher     dynamic batching across priorities, sources served in turn
    ratelimit   each tenant's `max_rate`, counted from its stream's sequence numbers
    budget      `PixelBudget`: decoded pixels a worker may hold at once
    cpuprocs    `CpuProcesses`: decode, pre- and postprocessing in processes, on every core
    cpuchildren  `Children`: those processes: started, fed, read on the loop, replaced
    batchmodel  `BatchModel`, what the job path needs from a model, and `run_in`
    modelset    `ModelSet`: the model versions serving, each job's version, canary outcomes
    rollout     `RolloutFollower`: loads, warms and swaps in the versions a rollout names
    preflight   `check_startup`: the task, hooks and screen must load before NATS is touched
"""

from __future__ import annotations

from function.engine.accounting import (
    BusyClock,
    WarmMeter,
)
from function.engine.batcher import (
    PriorityBatcher,
)
from function.engine.batchmodel import (
    BatchModel,
    run_in,
)
from function.engine.budget import (
    DEFAULT_PIXELS_PER_JOB,
    PixelBudget,
    pixel_budget,
)
from function.engine.consumer import (
    JobConsumer,
)
from function.engine.control import (
    JobControl,
)
from function.engine.direct import (
    DirectInference,
)
from function.engine.feeds import (
    FeedKey,
    Feeds,
)
from function.engine.finish import (
    SMALL_IMAGE_PIXELS,
    Completion,
)
from function.engine.inflight import (
    InFlightJob,
    wall_ns,
)
from function.engine.job import (
    SMALL_INPUT_BYTES,
    Admission,
)
from function.engine.jobmetrics import (
    JobMetrics,
)
from function.engine.keepalive import (
    keep_alive,
)
from function.engine.preflight import (
    StartupError,
    check_startup,
)
from function.engine.ratelimit import (
    TenantRates,
)
from function.engine.screen import (
    ScreenError,
    Screening,
    load_screen,
    rejection,
    score_in,
)
from function.engine.screen_queue import (
    SCREEN_WAIT_S,
    ScreenGate,
)
from function.engine.settle import (
    Settler,
    Succeeded,
)

__all__ = [
    "DEFAULT_PIXELS_PER_JOB",
    "SCREEN_WAIT_S",
    "SMALL_IMAGE_PIXELS",
    "SMALL_INPUT_BYTES",
    "Admission",
    "BatchModel",
    "BusyClock",
    "Completion",
    "DirectInference",
    "FeedKey",
    "Feeds",
    "InFlightJob",
    "JobConsumer",
    "JobControl",
    "JobMetrics",
    "PixelBudget",
    "PriorityBatcher",
    "ScreenError",
    "ScreenGate",
    "Screening",
    "Settler",
    "StartupError",
    "Succeeded",
    "TenantRates",
    "WarmMeter",
    "check_startup",
    "keep_alive",
    "load_screen",
    "pixel_budget",
    "rejection",
    "run_in",
    "score_in",
    "wall_ns",
]
