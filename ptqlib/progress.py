"""One progress line: plain text that renders cleanly in a terminal and in a notebook."""
from __future__ import annotations

import sys

from tqdm.std import tqdm


def progress(iterable=None, desc: str = "", total: int | None = None, initial: int = 0, file=None):
    """A tqdm line with count, elapsed time and ETA, refreshed at most every 2 s."""
    return tqdm(iterable, desc=desc, total=total, initial=initial, file=file or sys.stderr, mininterval=2.0,
                ncols=90, dynamic_ncols=False)
