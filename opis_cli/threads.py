"""One thread budget for every pool: BLAS (matrix products), numba (kernels) and FAISS (OpenMP).

They run one after another, never at the same time, so each may use the whole budget; capping
all of them to the same number keeps the process from oversubscribing the machine.
"""

from __future__ import annotations

import os
from contextlib import contextmanager


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextmanager
def thread_limit(threads: int | None):
    """Cap BLAS and numba threads (default: the cores this process may run on); yields the cap."""
    from threadpoolctl import threadpool_limits

    n = max(1, int(threads)) if threads else available_cores()
    previous = None
    try:
        import numba

        previous = numba.get_num_threads()
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        n = numba.get_num_threads()
    except ImportError:
        pass
    try:
        with threadpool_limits(limits=n):
            yield n
    finally:
        if previous is not None:
            import numba

            numba.set_num_threads(previous)
