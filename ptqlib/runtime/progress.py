"""Progress lines: plain text that renders cleanly in a terminal and in a notebook."""
from __future__ import annotations

import sys
import threading

from tqdm.std import tqdm


def progress(iterable=None, desc: str = "", total: int | None = None, initial: int = 0, file=None):
    """A tqdm line with count, elapsed time and ETA, refreshed at most every 2 s."""
    return tqdm(iterable, desc=desc, total=total, initial=initial, file=file or sys.stderr, mininterval=2.0,
                ncols=90, dynamic_ncols=False)


class StageProgress:
    """One terminal line per stage: jobs done/total, elapsed and ETA, read from the store.

    The stage's jobs run inside a notebook kernel (and its workers), so the line counts
    completion markers in the store every second: it works for every executor, and a resumed
    run counts its finished jobs at once.
    """

    def __init__(self, store, jobs: list, desc: str, interval: float = 1.0):
        self.store, self.jobs, self.interval = store, jobs, interval
        self.bar = progress(desc=desc, total=len(jobs), initial=self._count(), file=sys.stdout)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _count(self) -> int:
        return sum(self.store.is_complete(j) for j in self.jobs)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._refresh()

    def _refresh(self) -> None:
        done = self._count()
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._refresh()
        self.bar.close()
