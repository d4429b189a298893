"""The exact engine on a Dask cluster (optional extra: ``pip install 'opis-cli[dask]'``).

The pair histograms are integer counts and the Recall@k candidates are minima, so an exact pass
splits into independent tasks whose partial results merge by addition (pairs.PassCounts). Each
task runs the engine's one block function, :func:`opis_cli.pairs.stripe_counts`, on a few row
stripes of the upper triangle; Dask schedules, retries and moves the tasks:

* the prepared embeddings are scattered to every worker once (``broadcast=True``), not sent with
  each task;
* partial results are merged in a tree as they complete (pairs of finished results are merged on
  the workers, so no single node receives every partial result);
* progress is reported from task completion;
* a worker lost mid-run costs only its tasks: Dask reruns them elsewhere (and recomputes lost
  partial results from their lineage), and the result is the same, since every task computes the
  same panels with the same matrix products wherever it runs.

A worker process runs one kernel at a time (numba's thread pool is not re-entrant); the kernel
itself uses the worker's cores.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .errors import ConfigError
from .pairs import PassCounts, row_stripes, stripe_counts

if TYPE_CHECKING:
    from .prepare import PreparedEmbeddings

_KERNEL_LOCK = threading.Lock()  # one per worker process


def _worker_threads() -> int:
    """The running worker's thread count (``dask worker --nthreads``): the kernel's thread budget."""
    from .threads import available_cores

    try:
        from distributed import get_worker

        return int(getattr(get_worker(), "nthreads", 0)) or available_cores()
    except (ImportError, ValueError):  # not inside a worker (tests calling the task directly)
        return available_cores()


def _stripe_task(p, edges, stripes, kmax, per_class, memory_budget, threads):
    """Worker side: the counts of ``stripes`` (runs on a Dask worker). Tasks of one worker take
    turns (the lock); each uses the worker's threads, so a worker started with --nthreads K uses
    K cores and several workers on one machine do not oversubscribe it."""
    from .threads import thread_limit

    with _KERNEL_LOCK, thread_limit(threads or _worker_threads()) as n_threads:
        return stripe_counts(p, edges, stripes, kmax=kmax, per_class=per_class, memory_budget=memory_budget,
                             n_threads=n_threads)


def _merge_task(a: PassCounts, b: PassCounts) -> PassCounts:
    return a.merge(b)


def _stripe_pairs(n: int, s0: int, s1: int) -> int:
    return sum(n - 1 - i for i in range(s0, s1))


def dask_counts(
    client: Any,
    p: "PreparedEmbeddings",
    edges: np.ndarray,
    *,
    kmax: int,
    per_class: bool,
    memory_budget: int,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    tasks_per_worker: int = 8,
) -> PassCounts:
    """An exact pass's :class:`~opis_cli.pairs.PassCounts`, computed by the workers of ``client``
    (a ``dask.distributed.Client``). Identical to the local engine's for the same
    ``memory_budget`` (which fixes the panels). ``threads``: kernel and BLAS threads per task
    (default: the worker machine's cores)."""
    from distributed import as_completed

    stripes = row_stripes(p.n, memory_budget)
    workers = max(1, len(client.scheduler_info().get("workers", {})) or 1)
    # Enough tasks to balance the triangle's uneven stripes and to lose little when a worker dies.
    per_task = max(1, len(stripes) // (workers * tasks_per_worker))
    chunks = [stripes[i:i + per_task] for i in range(0, len(stripes), per_task)]
    embeddings = client.scatter(p, broadcast=True, hash=False)
    edges = np.asarray(edges, np.float64)
    pairs_of = {}
    pending = []
    for chunk in chunks:
        future = client.submit(_stripe_task, embeddings, edges, chunk, kmax, per_class, memory_budget, threads,
                               pure=False)
        pairs_of[future.key] = sum(_stripe_pairs(p.n, s0, s1) for s0, s1 in chunk)
        pending.append(future)
    total = p.n * (p.n - 1) // 2
    done = 0
    finished: list = []
    queue = as_completed(pending)
    del pending  # a merged partial result must be free to leave the workers' memory
    for future in queue:
        if future.status == "error":
            future.result()  # raises the task's error here
        if future.key in pairs_of:
            done += pairs_of.pop(future.key)
            if progress is not None:
                progress(done, total)
        finished.append(future)
        if len(finished) >= 2:
            a, b = finished.pop(), finished.pop()
            queue.add(client.submit(_merge_task, a, b, pure=False))
    if len(finished) != 1:
        raise RuntimeError("the distributed pass lost a partial result")
    return finished[0].result()


def local_cluster_client(workers: int, threads_per_worker: int | None = None):
    """A ``dask.distributed.Client`` on a new local cluster of ``workers`` processes, the machine's
    cores shared among them; the caller closes it (``client.close(); client.cluster.close()``)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("--engine dask needs the dask extra: pip install 'opis-cli[dask]'") from None
    from .threads import available_cores

    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    per_worker = threads_per_worker or max(1, available_cores() // workers)
    # dashboard on a free port: a fixed one clashes with any other cluster on the machine
    cluster = LocalCluster(n_workers=workers, threads_per_worker=per_worker, processes=True,
                           dashboard_address=":0")
    return Client(cluster)


def connect(scheduler: str):
    """A ``dask.distributed.Client`` connected to the scheduler at ``scheduler`` (tcp://HOST:PORT)."""
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("--engine dask needs the dask extra: pip install 'opis-cli[dask]'") from None
    try:
        return Client(scheduler, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"cannot connect to the Dask scheduler at {scheduler}: {exc}") from None
