"""Error cases of the dask area (issue 15), registered into tests/error_cases.py's catalogue.

Only situations whose message is the same on every machine are here: a server on a free port
would put a different port in each message, so ports that never speak, HTTP servers and clusters
losing their workers are tested in tests/test_dask_hardening.py instead.
"""

from __future__ import annotations

from error_cases import _valid_parquet, case


def _scheduler(d, address: str) -> list:
    return ["evaluate", _valid_parquet(d), "--engine", "dask", "--scheduler", address, "--no-save"]


@case("scheduler-not-an-address", "--scheduler that is not an address at all", section="options")
def _(d):
    return _scheduler(d, "not a url")


@case("scheduler-bad-port", "--scheduler whose port is not a number", section="options")
def _(d):
    return _scheduler(d, "tcp://localhost:notaport")


@case("scheduler-web-address", "--scheduler given the dashboard's web address", section="options")
def _(d):
    return _scheduler(d, "http://localhost:8787/status")


@case("scheduler-unknown-host", "--scheduler naming a host that does not exist", section="options")
def _(d):
    return _scheduler(d, "tcp://no-such-host.invalid:8786")  # .invalid never resolves (RFC 6761)


@case("scheduler-nothing-listening", "--scheduler where nothing listens (connection refused)", section="options")
def _(d):
    return _scheduler(d, "tcp://127.0.0.1:1")  # port 1 (tcpmux): unused on any ordinary machine


@case("workers-below-1", "--workers 0 (a local cluster needs a worker process)", section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--engine", "dask", "--workers", "0", "--no-save"]


@case("dask-with-numpy-kernel", "--engine dask with --kernel numpy (the reference path is local only)", section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--engine", "dask", "--kernel", "numpy", "--no-save"]
