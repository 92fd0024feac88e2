"""The worker's own threads for handlers that are plain functions."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable


class HandlerThreads:
    """A fixed pool of daemon threads for plain functions.

    Not concurrent.futures.ThreadPoolExecutor: its threads are joined at interpreter exit, so
    one function stuck past its lease (which nothing can kill) would keep a drained worker
    process from ever exiting. Started on first use."""

    def __init__(self, size: int, name: str) -> None:
        self._size, self._name = size, name
        self._work: queue.SimpleQueue[tuple[Callable[[], object], concurrent.futures.Future[object]] | None]
        self._work = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, call: Callable[[], object]) -> concurrent.futures.Future[object]:
        if not self._threads:
            for index in range(self._size):
                thread = threading.Thread(target=self._serve, name=f"{self._name}-{index}", daemon=True)
                thread.start()
                self._threads.append(thread)
        future: concurrent.futures.Future[object] = concurrent.futures.Future()
        self._work.put((call, future))
        return future

    def _serve(self) -> None:
        while (item := self._work.get()) is not None:
            call, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def close(self) -> None:
        """Idle threads end; one still running a function ends with it (or with the process)."""
        for _ in self._threads:
            self._work.put(None)
        self._threads.clear()
