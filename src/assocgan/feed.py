"""Batches made ahead of the training steps that use them.

The loop asks a ``BatchFeed`` for one batch a step. With ``ahead`` set, a background thread makes the next
batches (calling the method's ``batch`` hook, moving them to the device: uint8 from pinned memory, converted
and degraded there) while the current step trains; without it each batch is made when it is asked for. The
thread makes exactly the batches of one segment of steps (up to the next saved state or the task's end), in
order, so the run's random streams are drawn in the same order as without it and stand where they would at
every saved state. On CUDA the thread works on a stream of its own and the loop waits for its event, not for
the device.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import torch


class BatchFeed:
    def __init__(self, make: Callable[[], Any], device: torch.device, ahead: bool = True, depth: int = 2):
        self.make, self.device, self.ahead, self.depth = make, device, ahead, depth
        self.waited = 0.0  # seconds the loop spent making batches or waiting for them
        self.left = 0  # batches of the current segment not yet handed out
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()

    def start(self, n: int) -> None:
        """Begin the next segment: ``n`` batches."""
        self.close()
        self.left = n
        if self.ahead and n > 1:
            self._queue, self._stop = queue.Queue(self.depth), threading.Event()
            self._thread = threading.Thread(target=self._run, args=(n, self._queue, self._stop), daemon=True, name="assocgan-batches")
            self._thread.start()

    def _put(self, q: queue.Queue, item: tuple, stop: threading.Event) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, n: int, q: queue.Queue, stop: threading.Event) -> None:
        cuda = self.device.type == "cuda"
        try:
            stream = None
            if cuda:
                torch.cuda.set_device(self.device)
                stream = torch.cuda.Stream(self.device)
            for _ in range(n):
                if stop.is_set():
                    return
                event = None
                with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
                    batch = self.make()
                    if cuda:
                        event = torch.cuda.Event()
                        event.record(stream)
                if not self._put(q, (batch, event, None), stop):
                    return
        except BaseException as e:  # handed to the loop, which raises it
            self._put(q, (None, None, e), stop)

    def next(self) -> Any:
        """The next batch of the segment."""
        if self.left <= 0:
            raise RuntimeError("BatchFeed.next: the segment has no batch left; call start first")
        self.left -= 1
        t0 = time.perf_counter()
        try:
            if self._thread is None:
                return self.make()
            batch, event, err = self._queue.get()
            if err is not None:
                self.close()
                raise err
            if event is not None:  # the tensors were made on the thread's stream: order the loop's after them
                current = torch.cuda.current_stream(self.device)
                current.wait_event(event)
                for v in vars(batch).values():
                    if isinstance(v, torch.Tensor) and v.device.type == "cuda":
                        v.record_stream(current)
            if self.left == 0:
                self.close()
            return batch
        finally:
            self.waited += time.perf_counter() - t0

    def close(self) -> None:
        """Stop making batches (those made and not handed out are dropped)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread, self._queue = None, None
