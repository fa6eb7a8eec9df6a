"""A MetaSchedule task scheduler that writes every measured batch before the next.

MetaSchedule's own schedulers send a task's candidates to the runner and move
on; the measurements are joined, and only then added to the database, when the
scheduler next returns to that task. Through the first round over a model's
tasks nothing reaches the database file, so a run killed there loses all of
it. `CommitEachBatch` joins the batch it sent last before it picks the next
task (round robin), so every finished batch is on disk. The price is that the
next build no longer overlaps the last measurement, which is small when one
machine does both, and round robin instead of gradient-based allocation.

With a ``deadline`` (``time.monotonic()`` seconds) it ends the run at the
first batch boundary past it: the batch just measured is committed, no new
one is started.
"""

from __future__ import annotations

import time

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.task_scheduler import PyTaskScheduler


@derived_object
class CommitEachBatch(PyTaskScheduler):
    def __init__(self, deadline: float | None = None) -> None:
        super().__init__()
        self._last = -1
        self._deadline = deadline

    def next_task_id(self) -> int:
        tasks = self._outer().tasks_
        if self._last >= 0 and not tasks[self._last].is_terminated:
            self.join_running_task(self._last)  # runs the measure callbacks: records hit the file
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return -1  # out of time: nothing is in flight now
        for step in range(1, len(tasks) + 1):
            candidate = (self._last + step) % len(tasks)
            if not tasks[candidate].is_terminated:
                self._last = candidate
                return candidate
        return -1
