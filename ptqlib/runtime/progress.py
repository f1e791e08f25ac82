"""Progress lines: plain text that renders cleanly in a terminal and in a notebook."""
from __future__ import annotations

import sys
import threading
import time

from tqdm.std import tqdm


def progress(iterable=None, desc: str = "", total: int | None = None, initial: int = 0, file=None):
    """A tqdm line with count, elapsed time and ETA, refreshed at most every 2 s."""
    return tqdm(iterable, desc=desc, total=total, initial=initial, file=file or sys.stderr, mininterval=2.0,
                ncols=90, dynamic_ncols=False)


class StageProgress:
    """One terminal line per stage: jobs done/total, elapsed and ETA, read from the store.

    The stage's jobs run inside a notebook kernel (and its workers), so the line counts
    completion markers in the store every second: it works for every executor, and a resumed
    run counts its finished jobs at once. The ETA is the rate measured between the first and the
    latest job this run finished (kernel start-up and resumed jobs do not enter it); "ETA ?"
    until two have finished. A stage without jobs (the analysis) gets one plain line, no bar.
    """
    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def __init__(self, store, jobs: list, desc: str, interval: float = 1.0):
        self.store, self.jobs, self.interval = store, jobs, interval
        self._first: tuple[float, int] | None = None  # (time, count) when this run first finished a job
        self.bar = None
        if jobs:
            self.bar = tqdm(desc=desc, total=len(jobs), initial=self._count(), file=sys.stdout, mininterval=2.0,
                            ncols=90, dynamic_ncols=False, bar_format=self.FORMAT, postfix="ETA ?")
        else:
            print(f"{desc}: reading the stored results (no jobs to run)", file=sys.stdout, flush=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def eta(self, done: int, now: float) -> str:
        """'ETA mm:ss' from this run's own rate, or 'ETA ?' before two jobs have finished."""
        if self._first is None or done - self._first[1] < 1 or now <= self._first[0]:
            return "ETA ?"
        rate = (done - self._first[1]) / (now - self._first[0])
        return f"ETA {tqdm.format_interval((len(self.jobs) - done) / rate)}"

    def _count(self) -> int:
        return sum(self.store.is_complete(j) for j in self.jobs)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._refresh()

    def _refresh(self) -> None:
        if self.bar is None:
            return
        done = self._count()
        if done > self.bar.n:
            now = time.monotonic()
            if self._first is None:
                self._first = (now, done)
            self.bar.set_postfix_str(self.eta(done, now), refresh=False)
            self.bar.update(done - self.bar.n)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._refresh()
        if self.bar is not None:
            self.bar.set_postfix_str("done", refresh=False)
            self.bar.close()
