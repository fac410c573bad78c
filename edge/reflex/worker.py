"""The inference worker: one queue and its threads run a model for every camera that shares it.

Cameras pre-process their own frames (on their own red-loop threads, in parallel) and decode their own
results; only the model runs here, so no camera waits on a lock that another may win again and again:

- **fair**: requests are served in the order cameras first asked (one slot per camera, FIFO), so a
  camera waits for at most one inference of each other camera before its own;
- **newest frame per camera wins**: a camera that asks again before its last request was taken
  replaces it in its place in the queue (the older request ends with `Superseded`). A red loop waits
  for its own look; when its camera's next frame arrives while that look still waits in line (a
  burst: every camera saw someone arrive at once), the capture thread defers it (`defer`): the red
  loop finishes that frame without objects, goes on with the newer one, and its next look takes the
  deferred request's place in line. A camera never falls behind its own stream because the detector
  is busy, and the detector only ever runs a camera's newest frame;
- **batched where the model allows it**: a model whose input has a dynamic batch dimension gets up to
  `max_batch` waiting requests (from different cameras) in one inference. A model exported with a
  fixed batch of 1 (the shipped YOLOX-Nano: `images [1, 3, 416, 416]`) gets them one by one;
- **latency or throughput**: a backend that has both (ONNX Runtime on the CPU: `infer_busy`, `lanes`)
  runs a request the fast way (every core, spinning between operators) while one camera uses the
  model, and the lean way once several do: single-threaded sessions without spinning (a third of the
  CPU per inference), one per core, each run by a lane of this worker, so a burst of requests (cameras
  that all saw someone arrive) is served on every core at once while the queue stays one queue, in
  one order. A GPU backend has one lane.

The work per request is the same however many cameras there are: a dict slot, a condition notify, an
event. The threads start with the first request and are daemons: they need no stopping.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

SHARED_AFTER_S = 1.0
"""The model counts as shared (lean inference) for this long after a second camera asked."""


class Superseded(Exception):
    """The request was replaced by a newer one of the same camera before the model took it."""


class Deferred(Superseded):
    """The camera's newer frame arrived while this request still waited in line: the caller goes on
    with that frame and asks again for it, in the place this request kept (`InferenceWorker.defer`)."""


class Pending:
    """One request: its input tensor (1, C, H, W), then its output or error."""

    __slots__ = ("deferred", "done", "error", "infer_ms", "output", "queued_at", "superseded", "taken_at",
                 "tensor")  # fmt: skip

    def __init__(self, tensor: np.ndarray) -> None:
        self.tensor = tensor
        self.done = threading.Event()
        self.output: np.ndarray | None = None
        self.error: BaseException | None = None
        self.superseded = False
        self.deferred = False
        self.queued_at = time.perf_counter()
        self.taken_at = 0.0
        self.infer_ms = 0.0

    def result(self, timeout: float | None = None) -> np.ndarray:
        """The model's output for this request (its own row of a batch); raises what the model raised,
        Superseded, or TimeoutError."""
        if not self.done.wait(timeout):
            raise TimeoutError("the inference worker did not answer in time")
        if self.deferred:
            raise Deferred
        if self.superseded:
            raise Superseded
        if self.error is not None:
            raise self.error
        assert self.output is not None
        return self.output

    @property
    def wait_ms(self) -> float:
        """Time spent queued behind other cameras' inferences before the model took this request (from
        the request whose deferred place it took over, if any)."""
        return max(0.0, (self.taken_at - self.queued_at) * 1e3) if self.taken_at else 0.0


class InferenceWorker:
    """Runs `backend.infer` (or, while shared, `backend.infer_busy`) for every caller, on its own
    thread (or `lanes` threads, each with a lean session of its own, where the backend has them)."""

    def __init__(
        self, backend: Any, *, name: str = "inference", max_batch: int | None = None, lanes: int | None = None
    ) -> None:
        """`max_batch`: most requests per inference (default: the backend's `max_batch`, else 1).
        `lanes`: inferences at once while the model is shared (default: the backend's `lanes`, else 1);
        one camera alone always gets one."""
        self.backend = backend
        self.name = name
        self.max_batch = max(1, int(max_batch or getattr(backend, "max_batch", 1) or 1))
        self._lean: Callable[..., np.ndarray] | None = getattr(backend, "infer_busy", None)
        self.lanes = max(1, int(lanes or getattr(backend, "lanes", 1) or 1)) if self._lean else 1
        self._cond = threading.Condition()
        self._queue: dict[Hashable, Pending] = {}
        """Waiting requests, one per caller, in the order callers first asked (dicts keep insertion order;
        replacing a caller's request keeps its place)."""
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._last_key: Hashable | None = None
        self._shared_until = 0.0
        self.inferences = 0
        self.batched = 0
        """Requests that shared an inference with another one."""
        self.superseded = 0
        self.deferrals = 0
        """Requests given up in line because their camera's newer frame arrived (`defer`)."""

    @property
    def shared(self) -> bool:
        """True while more than one caller has used the model within the last SHARED_AFTER_S."""
        return time.monotonic() < self._shared_until

    def submit(self, tensor: np.ndarray, key: Hashable) -> Pending:
        """Queue `tensor` for caller `key` (a camera); a request of the same key not taken yet is
        replaced (it ends with Superseded)."""
        request = Pending(tensor)
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.name} worker is closed")
            if key != self._last_key:
                if self._last_key is not None:
                    self._shared_until = time.monotonic() + SHARED_AFTER_S
                self._last_key = key
            older = self._queue.get(key)
            if older is not None and older.deferred:  # its place, kept for this one
                request.queued_at = older.queued_at
            elif older is not None:
                older.superseded = True
                older.done.set()
                self.superseded += 1
            self._queue[key] = request
            if not self._threads:
                for lane in range(self.lanes):
                    thread = threading.Thread(target=self._run, args=(lane,), name=f"{self.name}-{lane}",
                                              daemon=True)  # fmt: skip
                    self._threads.append(thread)
                    thread.start()
            self._cond.notify_all()  # every lane: one past the first may be waiting only for "shared"
        return request

    def defer(self, key: Hashable) -> bool:
        """`key`'s request, if still waiting in line, is given up by its caller (a newer frame of its
        camera arrived): the caller gets Deferred at once, and the request keeps its place in line for
        the caller's next request, which takes it over. Not asked again before the worker reaches it,
        it is dropped unrun. True if a waiting request was deferred."""
        with self._cond:
            request = self._queue.get(key)
            if request is None or request.deferred or request.superseded:
                return False
            request.deferred = True
            request.done.set()
            self.deferrals += 1
            return True

    def infer(self, tensor: np.ndarray, key: Hashable) -> Pending:
        """Submit and wait: the finished request (`.result()` is its output)."""
        request = self.submit(tensor, key)
        request.done.wait()
        return request

    def close(self) -> None:
        """Stop the threads once the queue is empty (requests after this raise RuntimeError)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    # -- the worker threads --------------------------------------------------------------------------

    def _take(self, lane: int) -> list[Pending] | None:
        with self._cond:
            # Lanes past the first serve only a shared model: one camera alone gets the fast session.
            while not self._queue or (lane and not self.shared):
                if self._closed:
                    return None
                self._cond.wait(SHARED_AFTER_S if lane else None)
            batch: list[Pending] = []
            while self._queue and len(batch) < self.max_batch:
                key = next(iter(self._queue))
                request = self._queue.pop(key)
                if not request.deferred:  # a deferred one nobody took over: its camera moved on
                    request.taken_at = time.perf_counter()
                    batch.append(request)
            if self._queue:
                self._cond.notify()  # another lane may take the next one
        return batch

    def _run(self, lane: int) -> None:
        while (batch := self._take(lane)) is not None:
            if not batch:
                continue
            started = time.perf_counter()
            try:
                if self._lean is not None and self.shared:
                    run: Callable[[np.ndarray], np.ndarray] = functools.partial(self._lean, lane=lane)
                else:
                    run = self.backend.infer
                if len(batch) == 1:
                    outputs = [run(batch[0].tensor)]
                else:
                    stacked = run(np.concatenate([r.tensor for r in batch]))
                    outputs = [stacked[i : i + 1] for i in range(len(batch))]
                    with self._cond:
                        self.batched += len(batch)
            except Exception as exc:  # the callers raise it; this thread goes on
                for request in batch:
                    request.error = exc
                    request.done.set()
                continue
            elapsed = (time.perf_counter() - started) * 1e3
            with self._cond:
                self.inferences += 1
            for request, output in zip(batch, outputs, strict=True):
                request.output = output
                request.infer_ms = elapsed
                request.done.set()
