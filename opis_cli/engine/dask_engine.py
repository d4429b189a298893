"""The exact engine on a Dask cluster (optional extra: ``pip install 'opis-cli[dask]'``).

An exact sweep's accumulators hold integer counts, sums and Recall@k minima, so a sweep splits
into independent tasks whose partial states merge by addition (accumulators.py). The driver
(sweep.py) hands this executor its one block function, ``run_stripes``, with unstarted
accumulator specs; each task runs it on a few row stripes of the upper triangle (this module
imports nothing of the driver); Dask schedules, retries and moves the tasks:

* the prepared embeddings and the accumulators' specs are scattered to every worker once
  (``broadcast=True``), not sent with each task;
* partial results are merged in a tree as they complete (pairs of finished results are merged on
  the workers, so no single node receives every partial result);
* progress is reported from task completion;
* a worker lost mid-run costs only its tasks: Dask reruns them elsewhere (and recomputes lost
  partial results from their lineage), and the result is the same, since every task computes the
  same panels with the same matrix products wherever it runs.

A worker process runs one kernel at a time (numba's thread pool is not re-entrant); the kernel
itself uses the worker's cores.

Every wait on a cluster is bounded, and each way a cluster fails (a malformed address, no scheduler
there, no workers or all of them lost, a lost scheduler) is one ConfigError saying what to do; the
clients come from :mod:`opis_cli.engine.dask_client` (address checks, a bounded probe, quiet logs).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from opis_cli.engine.dask_client import CLOSE_TIMEOUT, TIMEOUTS, cause, client_class, probe, quiet_logs, \
    quiet_workers_plugin, scheduler_address
from opis_cli.errors import ConfigError
from opis_cli.engine.panels import row_stripes, stripe_pairs

if TYPE_CHECKING:
    from opis_cli.data.prepare import PreparedEmbeddings

_KERNEL_LOCK = threading.Lock()  # one per worker process

CONNECT_TIMEOUT = 10.0  # s: reaching a scheduler (name, TCP connection, Dask handshake), all together
WORKER_WAIT = 30.0  # s: how long a run waits for a worker while the cluster has none
MAX_WORKERS_PER_CORE = 4  # local cluster: each worker process holds its own copy of the embeddings


def _worker_threads() -> int:
    """The running worker's thread count (``dask worker --nthreads``): the kernel's thread budget."""
    from opis_cli.threads import available_cores

    try:
        from distributed import get_worker

        return int(getattr(get_worker(), "nthreads", 0)) or available_cores()
    except (ImportError, ValueError):  # not inside a worker (tests calling the task directly)
        return available_cores()


def _stripe_task(p, run_stripes, accumulators, stripes, memory_budget, threads):
    """Worker side: fresh copies of ``accumulators`` fed the panels of ``stripes``. Tasks of one
    worker take turns (the lock); each uses the worker's threads, so a worker started with
    --nthreads K uses K cores and several workers on one machine do not oversubscribe it."""
    from opis_cli.threads import thread_limit

    with _KERNEL_LOCK, thread_limit(threads or _worker_threads()) as n_threads:
        return run_stripes(p, [a.fresh() for a in accumulators], stripes, memory_budget=memory_budget,
                           n_threads=n_threads)


def _merge_task(a: list, b: list) -> list:
    """Worker side: two partial states as one."""
    return [x.merge(y) for x, y in zip(a, b)]


def dask_sweep(
    client: Any,
    p: "PreparedEmbeddings",
    accumulators: list,
    run_stripes: Callable,
    *,
    memory_budget: int,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    tasks_per_worker: int = 8,
) -> list:
    """The merged (unfinished) states of ``accumulators`` after every stripe ran on the workers of
    ``client`` (a ``dask.distributed.Client``) through ``run_stripes`` (sweep.run_stripes, handed
    in). Identical to the local sweep's for the same ``memory_budget`` (which fixes the panels).
    ``threads``: kernel and BLAS threads per task (default: the worker machine's cores).
    ConfigError when the cluster has had no worker for WORKER_WAIT seconds (at the start or
    mid-run), loses the data on its workers, keeps losing a worker on one task, or when the
    scheduler is lost."""
    from distributed import as_completed

    stripes = row_stripes(p.n, memory_budget)
    workers = _wait_for_workers(client)
    # Enough tasks to balance the triangle's uneven stripes and to lose little when a worker dies.
    per_task = max(1, len(stripes) // (workers * tasks_per_worker))
    chunks = [stripes[i:i + per_task] for i in range(0, len(stripes), per_task)]
    try:
        embeddings = client.scatter(p, broadcast=True, hash=False)
        # The specs too: a group accumulator carries N group codes, which each task must not resend.
        specs = client.scatter([list(accumulators)], broadcast=True, hash=False)[0]
    except TIMEOUTS:  # the scheduler found no running worker to take the data: gone meanwhile
        raise _lost_all_workers() from None
    pairs_of = {}
    pending = []
    for chunk in chunks:
        future = client.submit(_stripe_task, embeddings, run_stripes, specs, chunk, memory_budget, threads,
                               pure=False)
        m = None if p.reference is None else p.reference.n
        pairs_of[future.key] = sum(stripe_pairs(p.n, s0, s1, m) for s0, s1 in chunk)
        pending.append(future)
    total = p.pair_count
    done = 0
    finished: list = []
    queue = as_completed(pending)
    del pending  # a merged partial result must be free to leave the workers' memory
    for future in _completed(client, queue):
        if future.status in ("error", "cancelled"):  # not "lost"/"pending": Dask recomputes those
            _result(client, future)
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
    return _result(client, finished[0])


def _worker_count(client) -> int | None:
    """How many workers the scheduler has now; None when it cannot be asked (then the futures'
    cancellation tells what happened)."""
    try:
        return len(client.nthreads())
    except (OSError, *TIMEOUTS):
        return None


def _wait_for_workers(client) -> int:
    """The number of workers, after waiting up to WORKER_WAIT s for a first one (a cluster still
    starting): Dask's scatter would fail after 2 s, and its tasks would wait for ever."""
    if count := _worker_count(client):
        return count
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT)
    except TIMEOUTS:
        address = _address(client)
        raise ConfigError(f"the Dask cluster at {address} has no workers (none joined within {WORKER_WAIT:g} s): "
                          f"start some, e.g. dask worker {address}") from None
    return _worker_count(client) or 1


def _completed(client, queue):
    """The futures of ``queue`` (a ``distributed.as_completed``) as they complete, like iterating
    over it, except that a cluster seen without any worker for WORKER_WAIT s ends the wait with
    ConfigError: Dask keeps such tasks waiting for ever."""
    workerless_since = None
    last_look = time.monotonic()
    while not queue.is_empty():
        if queue.has_ready():
            workerless_since = None
            yield next(queue)
            continue
        time.sleep(0.1)  # as_completed's own polling interval
        now = time.monotonic()
        if now - last_look < 1.0:  # ask the scheduler once a second, not at every poll
            continue
        last_look = now
        if _worker_count(client) != 0:
            workerless_since = None
        elif now - (workerless_since := workerless_since or now) >= WORKER_WAIT:
            raise ConfigError(f"the Dask cluster lost all its workers mid-run and none came back within "
                              f"{WORKER_WAIT:g} s: check the workers' logs (out of memory? killed?) and rerun")


def _result(client, future):
    """``future.result()``; what the cluster did to the task (cancelled it, kept losing its worker)
    as ConfigError, the task's own exception as it is (a bug)."""
    from distributed import CancelledError
    from distributed.scheduler import KilledWorker

    try:
        return future.result()
    except CancelledError as exc:
        if "connection" in str(getattr(exc, "reason", "")):  # "scheduler-connection-lost"
            raise ConfigError(f"lost the connection to the Dask scheduler at {_address(client)} mid-run: check "
                              "the scheduler (and the network to it) and rerun") from None
        raise _lost_all_workers() from None  # "lost dependencies": the scattered embeddings are gone
    except KilledWorker as exc:
        tries = getattr(exc, "allowed_failures", 3) + 1
        raise ConfigError(f"a Dask worker died {tries} times running one task of the pair pass (out of memory? see "
                          "the workers' logs): give the workers more memory, or a smaller --memory-budget for "
                          "smaller tasks") from None


def _lost_all_workers() -> ConfigError:
    return ConfigError("the Dask cluster lost all its workers mid-run, and with them the embeddings sent to them: "
                       "check the workers' logs (out of memory? killed?) and rerun")


def _address(client) -> str:
    return str(getattr(getattr(client, "scheduler", None), "address", None) or "the scheduler")


# ----------------------------------------------------------------------------- clients

def local_cluster_client(workers: int, threads_per_worker: int | None = None):
    """A ``dask.distributed.Client`` on a new local cluster of ``workers`` processes, the machine's
    cores shared among them. The caller closes it: ``client.close()`` closes the cluster too (a
    later ``client.cluster.close()`` does nothing). ConfigError for ``workers`` < 1 or above
    MAX_WORKERS_PER_CORE per core, or a cluster that cannot start."""
    from opis_cli.threads import available_cores

    cores = available_cores()
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if workers > MAX_WORKERS_PER_CORE * cores:
        raise ConfigError(f"--workers {workers} is more than {MAX_WORKERS_PER_CORE} worker processes per core, "
                          f"each with its own copy of the embeddings: give at most {MAX_WORKERS_PER_CORE * cores} "
                          f"({cores} cores here)")
    make_client = client_class()
    from distributed import LocalCluster

    quiet = quiet_logs()
    try:
        try:
            # The scheduler's HTTP server (dashboard, health checks) starts anyway: on a free port,
            # since a fixed one clashes with any other cluster on the machine.
            per_worker = threads_per_worker or max(1, cores // workers)
            cluster = LocalCluster(n_workers=workers, threads_per_worker=per_worker, processes=True,
                                   dashboard_address=":0")
        except Exception as exc:
            raise ConfigError(f"cannot start a local Dask cluster of {workers} worker process(es): "
                              f"{cause(exc)}") from None
        try:
            client = make_client(cluster, timeout=CONNECT_TIMEOUT)
            # The workers are this process's children, writing to its stderr: quiet them too.
            client.register_plugin(quiet_workers_plugin(), name="opis-quiet-logs")
        except BaseException:
            with contextlib.suppress(Exception):
                cluster.close(timeout=CLOSE_TIMEOUT)
            raise
    except BaseException:
        quiet.close()
        raise
    client.adopt(cluster, quiet)
    return client


def connect(scheduler: str, connect_timeout: float | None = None):
    """A ``dask.distributed.Client`` connected to the scheduler at ``scheduler`` (tcp://HOST:PORT,
    tls://, ucx://, ws://, wss://; HOST:PORT means tcp). Reaching it (name, TCP connection, Dask
    handshake) takes at most ``connect_timeout`` s (default CONNECT_TIMEOUT), and so does each
    later connection of the client (Dask's ``distributed.comm.timeouts.connect``). ConfigError for
    a malformed address, nothing listening there, or no Dask scheduler answering (a port that
    never speaks, an HTTP server, a worker). The caller closes the client."""
    address = scheduler_address(scheduler)
    timeout = CONNECT_TIMEOUT if connect_timeout is None else float(connect_timeout)
    make_client = client_class()
    import dask

    probe(address, timeout)
    life = quiet_logs()
    try:
        # "tcp": when a connection whose peer stopped acknowledging (machine gone, network cut) is
        # dead; distributed needs at least 11 s, and 30 s is its default.
        life.enter_context(dask.config.set({"distributed.comm.timeouts.connect": f"{timeout}s",
                                            "distributed.comm.timeouts.tcp": f"{max(30.0, 3 * timeout)}s"}))
        try:
            client = make_client(address, timeout=timeout)
        except (OSError, *TIMEOUTS) as exc:
            raise ConfigError(f"no Dask scheduler answered at {address}: {cause(exc)}") from None
        except Exception as exc:  # TLS without certificates, a protocol whose package is missing (ucx)
            raise ConfigError(f"cannot connect to the Dask scheduler at {address}: {cause(exc)}") from None
    except BaseException:
        life.close()
        raise
    client.adopt(None, life)
    return client
