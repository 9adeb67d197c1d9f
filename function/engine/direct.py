"""One job outside the queue (HTTP `/v1/infer`): the same decode, model and postprocess
as a batched job (its screen included), under the same pixel budget, ahead of queued jobs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from opentelemetry import trace

from function.contract.wire import JobRequest, Output, Timings
from function.engine.batchmodel import BatchModel, run_in
from function.engine.budget import PixelBudget
from function.engine.inflight import wall_ns
from function.engine.job import Admission
from function.engine.jobmetrics import JobMetrics
from function.transport.storage import ResultStore

__all__ = ["DirectInference"]


class DirectInference:
    """Runs single jobs for the HTTP surface on a consumer's model, pools and budget."""

    def __init__(
        self,
        model: BatchModel,
        results: ResultStore,
        admission: Admission,
        infer_pool: ThreadPoolExecutor,
        cpu_pool: ThreadPoolExecutor,
        budget: PixelBudget,
        metrics: JobMetrics,
    ) -> None:
        self._model = model
        self._results = results
        self._admission = admission
        self._infer_pool = infer_pool
        self._cpu_pool = cpu_pool
        self._budget = budget
        self._metrics = metrics

    async def run(self, request: JobRequest) -> tuple[dict[str, Output], Timings]:
        """The outputs of one request, and its timings (batch of one)."""
        outputs_wanted = self._model.check_outputs(request.outputs)
        data = request.image
        if data is None and request.image_ref is not None:
            data = await self._results.fetch_input(request.image_ref, request.tenant)
        assert data is not None
        image, sample, pixels = await self._admission.decode_admitted(
            data, request.content_type, outputs_wanted
        )
        try:
            await self._admission.screen(image, trace.get_current_span())
            start_ns = wall_ns()
            out = await run_in(self._infer_pool, self._model.fast, self._model.run_batch, [sample])
            end_ns = wall_ns()
            outputs = await run_in(
                self._cpu_pool, False, self._model.postprocess, out[0], image, outputs_wanted
            )
        finally:
            self._budget.release(pixels)
        infer_ms = (end_ns - start_ns) / 1e6
        self._metrics.inference.observe(infer_ms / 1000)
        return outputs, Timings(batch_size=1, inference_ms=infer_ms, compute_ms=infer_ms)
