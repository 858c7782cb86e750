"""One generation at a time: a line of jobs in front of a single worker thread.

The model is in memory once, and two generations at once would only split the same cores (or GPU) between
them, so jobs run in the order they came; each one hears its place in the line while it waits, then its
events (each scale's images, then the result) as they happen. A job whose listener goes away (a closed tab)
is dropped from the line, or stopped at its next scale if it had started.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import NextscaleError

Emit = Callable[[dict], None]
Work = Callable[[Emit], dict]  # work(emit) runs on the worker thread and returns the result's fields


class Cancelled(Exception):
    """Raised inside a job's work when its listener went away."""


@dataclass(eq=False)
class Job:
    work: Work
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    future: Future | None = None
    position: int = 0  # jobs ahead of this one
    finished: bool = False

    def emit(self, event: dict) -> None:
        """From the worker thread: one event to the listener (or stop here if nobody listens any more)."""
        if self.cancelled.is_set() or not call_soon(self.loop, self.events.put_nowait, event):
            raise Cancelled


def call_soon(loop: asyncio.AbstractEventLoop, callback, *args) -> bool:
    """Schedules `callback` on `loop` from another thread; False once the loop has closed (the server stopped)."""
    try:
        loop.call_soon_threadsafe(callback, *args)
        return True
    except RuntimeError:
        return False


class Line:
    """Jobs in order of arrival on one worker thread. Positions: how many jobs are ahead of a waiting one."""

    def __init__(self):
        self._executor: ThreadPoolExecutor | None = None  # made on first use, so a closed line can start again
        self._jobs: list[Job] = []  # the running job first, then the waiting ones in order

    def __len__(self) -> int:
        return len(self._jobs)

    def submit(self, work: Work) -> Job:
        """Queues `work`; call from the event loop. Its events come from `events(job)`."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nextscale-generate")
        job = Job(work, asyncio.get_running_loop())
        self._jobs.append(job)
        self._tell_positions()
        job.future = self._executor.submit(self._run, job)
        job.future.add_done_callback(lambda future: call_soon(job.loop, self._finished, job, future))
        return job

    def _tell_positions(self) -> None:
        for position, job in enumerate(self._jobs):
            if position and position != job.position:
                job.events.put_nowait({"event": "queued", "position": position})
            job.position = position

    @staticmethod
    def _run(job: Job) -> dict:
        job.emit({"event": "started"})
        return job.work(job.emit)

    def _finished(self, job: Job, future: Future) -> None:
        job.finished = True
        if job in self._jobs:  # close() may have cleared the line already
            self._jobs.remove(job)
        self._tell_positions()
        try:
            result = future.result()
        except (CancelledError, Cancelled):
            return  # nobody is listening
        except NextscaleError as e:
            job.events.put_nowait({"event": "error", "status": 400, "error": str(e)})
        except Exception as e:  # the server stays up; the listener hears what went wrong
            traceback.print_exception(e, file=sys.stderr)
            message = (str(e).strip().splitlines() or [type(e).__name__])[0]
            job.events.put_nowait({"event": "error", "status": 500, "error": f"generation failed: {message}"})
        else:
            job.events.put_nowait({"event": "done", **result})

    def cancel(self, job: Job) -> None:
        """Drops a waiting job, or stops a running one at its next scale."""
        job.cancelled.set()
        if job.future is not None:
            job.future.cancel()

    async def events(self, job: Job) -> AsyncIterator[dict]:
        """The job's events up to and including `done` or `error`; leaving early cancels the job."""
        try:
            while True:
                event = await job.events.get()
                yield event
                if event["event"] in ("done", "error"):
                    return
        finally:
            if not job.finished:
                self.cancel(job)

    def close(self) -> None:
        """Stops the running job at its next scale and drops the waiting ones."""
        for job in self._jobs:
            job.cancelled.set()
        self._jobs.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
