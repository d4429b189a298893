"""One thread budget for every pool: BLAS (matrix products), numba (kernels) and FAISS (OpenMP).

They run one after another, never at the same time, so each may use the whole budget; capping
all of them to the same number keeps the process from oversubscribing the machine.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path


def numba_module():
    """Import numba configured for this package: on-disk cache in a user-writable directory
    (site-packages may not be), and numba's own thread pool unless the user chose a layer.

    Every use of numba in the package goes through here, because the pool is fixed when numba
    first launches threads (``set_num_threads`` does) and the cache directory when it is imported.
    The default OpenMP layer spin-waits between launches and takes the cores from the BLAS matrix
    product that runs between two kernel calls: measured 5.6 s -> 4.3 s for the exact pass at
    N = 40k, D = 512 with numba's ``workqueue`` pool instead.
    """
    if "NUMBA_CACHE_DIR" not in os.environ:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        os.environ["NUMBA_CACHE_DIR"] = str(Path(base) / "opis-cli" / "numba")
    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"
    return numba


def check_threads(threads: int | None) -> None:
    """Refuse (ConfigError, exit 2) a thread count below 1; None means all available cores."""
    if threads is not None and threads < 1:
        from opis_cli.errors import ConfigError

        raise ConfigError(f"--threads must be >= 1, got {threads}")


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
        numba = numba_module()
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
            numba.set_num_threads(previous)
