"""The AjaxAI SDK's batch API over rowforge's BatchJobService."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from rowforge.clients._client import RowForge
from rowforge.clients._convert import bad_argument
from rowforge.clients.batch._queue import DEFAULT_FLUSH_INTERVAL_S, _Queue
from rowforge.clients.batch._results import BatchRequestResult, RequestRef, build_result
from rowforge.clients.batch.events import BatchRequestEvent
from rowforge.clients.batch_jobs import BatchRequest, Job, JobMetrics, JobState, RequestInfo
from rowforge.clients.config import ClientConfig
from rowforge.clients.exceptions import RequestCancelledError, RowForgeError

log = logging.getLogger("rowforge.clients.batch")

#: Where the seed reads its key from, after ``ROWFORGE_TOKEN``.
TOKEN_ENV = ("ROWFORGE_TOKEN", "AJAXAI_API_KEY")
REQUEST_EVENTS = {"request_succeeded", "request_failed", "request_cancelled"}

#: The seed's ``JobPerformanceMetrics``.
JobPerformanceMetrics = JobMetrics

Callback = Callable[[BatchRequestEvent], Any]


class _Reply(BaseModel):
    model_config = ConfigDict(extra="allow")


class AddRequestResponse(_Reply):
    """What ``job.add_request`` returns: ``queued`` while the request waits in the client's
    batch, else the counts of the ``AddRequests`` call that sent it."""

    request_id: str
    queued: bool
    added_count: int = 0
    total_requests: int = 0


class SubmitJobResponse(_Reply):
    """What ``job.submit`` returns."""

    job_id: str
    state: str


class AjaxAiRequestItem:
    """One request: content parts (text, images), an optional Pydantic ``output_model`` for
    structured output, and tracking metadata. Builder methods return the item.

    >>> AjaxAiRequestItem(request_id="req_1").add_text("Hello world")
    """

    def __init__(self, request_id: str, output_model: type[BaseModel] | None = None,
                 content_parts: list[dict[str, Any]] | None = None) -> None:
        if output_model is not None and not (isinstance(output_model, type)
                                             and issubclass(output_model, BaseModel)):
            raise bad_argument("output_model", "must be a Pydantic model class")
        self.request_id = request_id
        self.output_model = output_model
        self.content_parts: list[dict[str, Any]] = list(content_parts or [])
        self.metadata: dict[str, Any] | None = None

    def add_text(self, text: str) -> AjaxAiRequestItem:
        """Append a text part."""
        self.content_parts.append({"type": "text", "text": str(text)})
        return self

    def add_image(self, image: str | os.PathLike[str], content_type: str | None = None
                  ) -> AjaxAiRequestItem:
        """Append an image: a FileService URI (``file://...``), an http(s) URL, or a local
        path (uploaded when the request is added to a job)."""
        part: dict[str, Any] = {"type": "image", "uri": os.fspath(image)}
        if content_type:
            part["content_type"] = content_type
        self.content_parts.append(part)
        return self

    def add_request_metadata(self, metadata: BaseModel | Mapping[str, Any]
                             ) -> AjaxAiRequestItem:
        """Attach tracking metadata (returned with the result, never sent to the model)."""
        if isinstance(metadata, BaseModel):
            self.metadata = metadata.model_dump(mode="json")
        elif isinstance(metadata, Mapping):
            self.metadata = dict(metadata)
        else:
            raise bad_argument("metadata", "must be a Pydantic model or a dict")
        return self

    def to_request(self, upload: Callable[[Path], str] | None = None) -> BatchRequest:
        """The service's request; local image paths go through ``upload`` (path -> URI)."""
        if not self.content_parts:
            raise bad_argument(f"requests[{self.request_id}].content_parts",
                               "add text or an image first")
        parts = []
        for part in self.content_parts:
            part = dict(part)
            uri = str(part.get("uri") or part.get("image") or "")
            if part.get("type") == "image" and not _is_remote(uri):
                if upload is None:
                    raise bad_argument("image", f"{uri!r} is a local path; add the request to "
                                                "a job to upload it")
                part = {"type": "image", "uri": upload(Path(uri).expanduser()),
                        "content_type": part.get("content_type", "")}
            parts.append(part)
        schema = self.output_model.model_json_schema() if self.output_model else None
        return BatchRequest(request_id=self.request_id, content_parts=parts,
                            output_schema=schema,
                            output_schema_name=self.output_model.__name__
                            if self.output_model else "",
                            metadata=self.metadata)

    def __repr__(self) -> str:
        return (f"AjaxAiRequestItem(request_id={self.request_id!r}, "
                f"parts={len(self.content_parts)}, output_model="
                f"{self.output_model.__name__ if self.output_model else None})")


def _is_remote(uri: str) -> bool:
    return uri.startswith(("file://", "http://", "https://", "gs://", "s3://", "data:"))


class AjaxAiBatchJob:
    """A batch job: add requests (batched client-side), submit, then read results or get
    callbacks as requests finish.

    Requests are sent ``max_batch_size`` at a time, or after ``flush_interval_s`` by a
    background timer; :meth:`submit` (or :meth:`flush`) sends the rest. A request the server
    refuses is never dropped silently: it is named in the
    :class:`~rowforge.clients.batch.exceptions.InvalidBatchRequestsError` raised by the next
    ``add_request`` / ``flush`` / ``submit``, and the valid requests sent with it are kept.
    """

    def __init__(self, client: RowForge, job: Job, *, max_batch_size: int = 20,
                 flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
                 owns_client: bool = False) -> None:
        if not flush_interval_s > 0:
            raise bad_argument("flush_interval_s", "must be a positive number of seconds")
        self.client = client
        self._owns_client = owns_client
        self._job = job
        self.max_batch_size = max(1, min(int(max_batch_size or 20), 100))
        self.flush_interval_s = float(flush_interval_s)
        self._queue = _Queue(self)
        self._output_models: dict[str, type[BaseModel]] = {}
        self._callbacks: list[Callback] = []
        self._watcher: threading.Thread | None = None
        self._watch_stream: Any = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- identity ---------------------------------------------------------------------------

    @property
    def job_id(self) -> str:
        return self._job.job_id

    @property
    def model(self) -> str:
        return self._job.model

    @property
    def job(self) -> Job:
        """The job as last fetched (see :meth:`refresh`)."""
        return self._job

    def refresh(self) -> Job:
        """Fetch the job's state and metrics."""
        self._job = self.client.batch.get_job(self.job_id)
        return self._job

    # -- requests ---------------------------------------------------------------------------

    def add_request(self, request: AjaxAiRequestItem) -> AddRequestResponse:
        """Queue a request. A full batch (``max_batch_size``) is sent at once; a partial one
        after ``flush_interval_s`` seconds by a background timer, or by :meth:`flush` /
        :meth:`submit`.

        Raises:
            InvalidArgumentError: a request id already queued or sent, or no content.
            InvalidBatchRequestsError: requests the server refused (named by id), found by
                this call's send or by an earlier background flush; the valid ones were sent.
            RowForgeError: an earlier background flush failed after its retries (its requests
                stay queued and are sent again); this request was not queued.
        """
        if not isinstance(request, AjaxAiRequestItem):
            raise bad_argument("request", "must be an AjaxAiRequestItem")
        if request.output_model is not None:
            with self._lock:
                self._output_models[request.request_id] = request.output_model
        sent = self._queue.add(request)
        if sent is None:
            return AddRequestResponse(request_id=request.request_id, queued=True)
        return AddRequestResponse(request_id=request.request_id, queued=False,
                                  added_count=sent.added_count, total_requests=sent.total_requests)

    def flush(self) -> int:
        """Send the queued requests now; returns how many the server accepted.

        Raises:
            InvalidBatchRequestsError / RowForgeError: as :meth:`add_request`.
        """
        return self._queue.flush()

    def _upload(self, path: Path) -> str:
        return self.client.file.upload_file(path).uri

    # -- lifecycle --------------------------------------------------------------------------

    def submit(self) -> SubmitJobResponse:
        """Send queued requests and start processing; returns at once. Stops the flush timer.

        Raises:
            InvalidBatchRequestsError: requests the server refused, named by id (the valid ones
                were sent; the job is not submitted, so more can be added).
        """
        self._queue.flush()
        self._job = self.client.batch.submit_job(self.job_id)
        self._queue.stop()
        if self._callbacks:
            self._start_watcher()
        return SubmitJobResponse(job_id=self.job_id, state=self._job.state.value)

    def get_state(self) -> str:
        """``created``, ``populating``, ``ready``, ``processing``, ``succeeded``, ``failed`` or
        ``cancelled``."""
        return self.refresh().state.value

    def get_metrics(self) -> JobMetrics:
        """Requests total/processed/successful/failed, tokens, duration."""
        return self.refresh().metrics

    def get_request_state(self, request_id: str) -> str:
        """One request's state: ``pending``, ``running``, ``succeeded``, ``failed`` or
        ``cancelled``."""
        return self.client.batch.get_request(self.job_id, request_id).state.value

    def get_request(self, request_id: str) -> RequestInfo:
        """One request's state, attempts, last error and result."""
        return self.client.batch.get_request(self.job_id, request_id)

    def cancel(self) -> str:
        """Cancel the job (finished results stay); returns the new state."""
        self._job = self.client.batch.cancel_job(self.job_id)
        return self._job.state.value

    def wait(self, timeout: float | None = None, poll_interval: float = 0.5) -> str:
        """Block until the job ends (and callbacks ran); returns the final state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        watcher = self._watcher
        if watcher is not None:
            watcher.join(timeout)
        while True:
            state = self.refresh().state
            if state.is_terminal or (deadline is not None and time.monotonic() >= deadline):
                return state.value
            time.sleep(poll_interval)

    # -- results ----------------------------------------------------------------------------

    def get_results(self, output_model: type[BaseModel] | None = None, *, follow: bool = True,
                    cursor: int = 0) -> Iterator[BatchRequestResult]:
        """Results as they are recorded (until the job ends with ``follow``).

        With ``output_model``, ``result.response`` is the answer parsed into it; without,
        ``result.response.text`` is the text and ``result.response_model`` is still parsed
        when this job object added the request with its own ``output_model``. Reconnects
        from the last result after a dropped connection.
        """
        stream = self.client.batch.stream_results(self.job_id, cursor=cursor, follow=follow)
        try:
            for result in stream:
                model = output_model or self._output_models.get(result.request_id)
                yield build_result(result, model, model_as_response=output_model is not None)
        finally:
            close = getattr(stream, "close", None)  # a generator (the sync client's)
            if close is not None:
                close()

    # -- callbacks --------------------------------------------------------------------------

    def on_request_complete(self, callback: Callback) -> AjaxAiBatchJob:
        """Call ``callback(event)`` on a background thread as each request finishes.

        Delivery starts when the job is submitted (at once if it already is) and follows the
        job's event stream until the job ends; the thread keeps the process alive until then
        (see :meth:`stop_callbacks`). An exception raised by a callback is logged and never
        stops delivery.
        """
        if not callable(callback):
            raise bad_argument("callback", "must be callable")
        self._callbacks.append(callback)
        if self._job.state not in (JobState.CREATED, JobState.POPULATING):
            self._start_watcher()
        return self

    def stop_callbacks(self, timeout: float | None = 5.0) -> None:
        """Stop delivering callbacks (events not yet delivered are dropped)."""
        self._stop.set()
        stream = self._watch_stream
        if stream is not None:
            stream.cancel()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout)

    def _start_watcher(self) -> None:
        with self._lock:
            if self._watcher is not None and self._watcher.is_alive():
                return
            self._stop.clear()
            self._watcher = threading.Thread(target=self._watch, name=f"rowforge-batch-"
                                             f"{self.job_id}", daemon=False)
            self._watcher.start()

    def _watch(self) -> None:
        try:
            self._watch_stream = self.client.batch.watch_job(self.job_id)
            for event in self._watch_stream:
                if self._stop.is_set():
                    return
                if event.event_type in REQUEST_EVENTS:
                    self._deliver(self._event(event))
        except RequestCancelledError:
            if not self._stop.is_set():
                log.warning("callback stream of job %s was cancelled", self.job_id)
        except RowForgeError as err:
            log.error("callback stream of job %s stopped: %s", self.job_id, err)
        finally:
            self._watch_stream = None

    def _event(self, event: Any) -> BatchRequestEvent:
        result = None
        error = ""
        if event.result is not None:
            result = build_result(event.result, self._output_models.get(event.request_id),
                                  model_as_response=False)
            if event.result.error is not None:
                error = event.result.error.message or event.result.error.reason
        return BatchRequestEvent(
            event_type=event.event_type, job_id=self.job_id, request_id=event.request_id,
            request=result.request if result else RequestRef(request_id=event.request_id),
            result=result, error=error, sequence=event.sequence)

    def _deliver(self, event: BatchRequestEvent) -> None:
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                # The seed's contract: a failing callback is logged and never stops delivery.
                log.exception("callback %r failed for request %s of job %s",
                              getattr(callback, "__name__", callback), event.request_id,
                              self.job_id)

    def close(self) -> None:
        """Stop callbacks and close the connection this job opened (a ``client=`` passed to
        ``create_batch_job`` stays open). Queued requests not yet sent are not sent."""
        self._queue.stop()
        self.stop_callbacks()
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> AjaxAiBatchJob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AjaxAiBatchJob(job_id={self.job_id!r}, state={self._job.state.value!r})"


def _client(api_key: str | None, address: str | None, project_id: str | None,
            client: RowForge | None) -> RowForge:
    if client is not None:
        return client
    config = ClientConfig.resolve(token=api_key, address=address, project_id=project_id,
                                  token_env=TOKEN_ENV)
    return RowForge(config=config)


def create_batch_job(
    api_key: str | None = None,
    model: str | None = None,
    temperature: float = 0.5,
    max_output_tokens: int = 1024,
    system_instruction: str = "",
    job_type: str = "",
    metadata: Mapping[str, Any] | None = None,
    max_batch_size: int = 20,
    *,
    flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
    address: str | None = None,
    project_id: str | None = None,
    idempotency_key: str | None = None,
    client: RowForge | None = None,
) -> AjaxAiBatchJob:
    """Create a batch job.

    Args:
        api_key: rowforge token (default ``ROWFORGE_TOKEN``, then ``AJAXAI_API_KEY``).
        model: Model id; ``None`` picks the server's default chat model.
        temperature: Sampling temperature (0 to 2).
        max_output_tokens: Cap of each answer.
        system_instruction: System prompt of every request.
        job_type: Free-form type (for filtering and routing callbacks).
        metadata: Custom job metadata.
        max_batch_size: Requests per ``AddRequests`` call (1 to 100).
        flush_interval_s: Seconds a queued request waits for its batch to fill before a
            background timer sends the partial batch.
        address / project_id: Server and project (default ``ROWFORGE_ADDRESS`` /
            ``ROWFORGE_PROJECT_ID``).
        idempotency_key: Creating again with the same key returns the same job.
        client: An existing :class:`RowForge` to use instead of a new connection.

    Raises:
        AjaxAiAuthorizationError: bad token; InvalidArgumentError: bad parameters.
    """
    if not 1 <= int(max_batch_size) <= 100:
        raise bad_argument("max_batch_size", "must be between 1 and 100")
    if not flush_interval_s > 0:
        raise bad_argument("flush_interval_s", "must be a positive number of seconds")
    conn = _client(api_key, address, project_id, client)
    try:
        job = conn.batch.create_job(
            model or "", temperature=temperature, max_output_tokens=max_output_tokens,
            system_instruction=system_instruction, job_type=job_type, metadata=metadata,
            max_batch_size=max_batch_size, idempotency_key=idempotency_key)
    except BaseException:
        if client is None:
            conn.close()
        raise
    return AjaxAiBatchJob(conn, job, max_batch_size=max_batch_size,
                          flush_interval_s=flush_interval_s, owns_client=client is None)


def get_batch_job(api_key: str | None = None, job_id: str = "", *, address: str | None = None,
                  project_id: str | None = None, client: RowForge | None = None
                  ) -> AjaxAiBatchJob:
    """An existing job by id.

    Raises:
        AjaxAiJobNotFoundError: no such job in the project.
    """
    if not job_id:
        raise bad_argument("job_id", "is required")
    conn = _client(api_key, address, project_id, client)
    try:
        job = conn.batch.get_job(job_id)
    except BaseException:
        if client is None:
            conn.close()
        raise
    return AjaxAiBatchJob(conn, job, max_batch_size=job.max_batch_size or 20,
                          owns_client=client is None)


class AjaxAiClient:
    """One connection for many jobs; ``start_polling()`` / ``stop_polling()`` run the
    callbacks of every job it made (the seed's "automatic polling")."""

    def __init__(self, api_key: str | None = None, *, address: str | None = None,
                 project_id: str | None = None) -> None:
        self.client = _client(api_key, address, project_id, None)
        self._jobs: list[AjaxAiBatchJob] = []
        self._polling = False

    def create_batch_job(self, **kwargs: Any) -> AjaxAiBatchJob:
        job = create_batch_job(client=self.client, **kwargs)
        self._jobs.append(job)
        return job

    def get_batch_job(self, job_id: str) -> AjaxAiBatchJob:
        job = get_batch_job(job_id=job_id, client=self.client)
        self._jobs.append(job)
        if self._polling and job._callbacks:
            job._start_watcher()
        return job

    def start_polling(self) -> None:
        """Deliver callbacks of submitted jobs (jobs start their own delivery on submit)."""
        self._polling = True
        for job in self._jobs:
            if job._callbacks and job.job.state not in (JobState.CREATED, JobState.POPULATING):
                job._start_watcher()

    def stop_polling(self) -> None:
        """Stop every job's callback delivery."""
        self._polling = False
        for job in self._jobs:
            job.stop_callbacks()

    def close(self) -> None:
        self.stop_polling()
        self.client.close()
