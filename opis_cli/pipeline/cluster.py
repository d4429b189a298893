"""Where the exact passes run: this machine, or a Dask cluster (docs/distributed.md)."""

from __future__ import annotations

from contextlib import contextmanager

from opis_cli.errors import ConfigError, OpisError

EXECUTORS = ("local", "dask")


@contextmanager
def cluster_client(engine: str = "local", scheduler: str | None = None, workers: int | None = None,
                   threads: int | None = None):
    """The Dask client ``engine`` asks for, closed (with the cluster it started) afterwards.

    ``engine="local"`` yields None (the exact passes run in this process). ``engine="dask"``
    connects to ``scheduler`` (``tcp://HOST:PORT``, an existing cluster, left running), or starts
    a local cluster of ``workers`` processes (default: one per available core) with ``threads``
    threads each. Needs the ``dask`` extra.
    """
    if engine not in EXECUTORS:
        raise ConfigError(f"unknown engine {engine!r}; choose {', '.join(EXECUTORS)}")
    if engine == "local":
        if scheduler is not None or workers is not None:
            raise OpisError("--scheduler and --workers need --engine dask")
        yield None
        return
    from opis_cli.engine.dask_engine import connect, local_cluster_client

    if scheduler is not None and workers is not None:
        raise OpisError("give --scheduler (an existing cluster) or --workers (a local one), not both")
    if scheduler is not None:
        client = connect(scheduler)
    else:
        from opis_cli.threads import available_cores

        client = local_cluster_client(available_cores() if workers is None else workers, threads)
    try:
        yield client
    finally:
        cluster = getattr(client, "cluster", None) if scheduler is None else None
        client.close()
        if cluster is not None:
            cluster.close()
