"""The Dask executor when the cluster is not what it should be: each situation ends in one line and
exit code 2 (or a normal run), in seconds, never in a hang or a traceback.

Timeouts are shortened here through the module constants (opis_cli.engine.dask_engine.CONNECT_TIMEOUT,
WORKER_WAIT; opis_cli.engine.dask_client.REFUSED_GRACE): in-process by monkeypatch, and for the real
CLI by a small launcher that sets them before calling opis_cli.cli.app.main.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import opis_cli  # noqa: E402
from opis_cli.engine import dask_client, dask_engine  # noqa: E402
from opis_cli.engine.dask_engine import connect, local_cluster_client  # noqa: E402
from opis_cli.errors import ConfigError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"


def _cli(*args, timeout=60, **constants) -> tuple[subprocess.CompletedProcess, float]:
    """The real CLI entry point in a child process, with dask_engine's constants set first."""
    patch = "; ".join(f"dask_engine.{k} = {v!r}" for k, v in constants.items())
    code = (f"import sys; from opis_cli.engine import dask_engine; {patch}; from opis_cli.cli.app import main; "
            f"sys.argv = ['opis'] + sys.argv[1:]; main()")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    return proc, time.monotonic() - start


def _one_line_error(proc, fragment: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert fragment in proc.stderr, proc.stderr


def _listener(reply: bytes | None = None):
    """A TCP server on a free port that accepts connections and then either never writes
    (``reply`` None) or writes ``reply`` at once; returns (address, close)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed
                return
            held.append(conn)
            if reply is not None:
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()

    def close():
        server.close()
        for conn in held:
            conn.close()

    return f"tcp://127.0.0.1:{server.getsockname()[1]}", close


# ----------------------------------------------------------------------------- addresses

@pytest.mark.parametrize("text, fragment", [
    ("not a url", "is not an address"),
    ("", "is not an address"),
    ("tcp://host:notaport", "the port must be a number from 1 to 65535, got 'notaport'"),
    ("tcp://host:0", "got '0'"),
    ("tcp://host:70000", "got '70000'"),
    ("tcp://host:8786/", "got '8786/'"),
    ("tcp://host", "has no port"),
    ("http://localhost:8787/status", "is a web address"),
    ("https://dask.example.com", "is a web address"),
    ("ftp://host:21", "unknown protocol 'ftp'"),
    ("tcp://::1:8786", "write an IPv6 address in brackets"),
    ("tcp://[nope]:8786", "is not a host name or IP address"),
    ("tcp://user@host:8786", "is not a host name or IP address"),
    ("tcp://a\nb:1", "is not a host name or IP address"),
])
def test_a_malformed_scheduler_address_is_refused_up_front(text, fragment):
    with pytest.raises(ConfigError) as err:
        connect(text)
    message = str(err.value)
    assert fragment in message and "\n" not in message
    assert "tcp://HOST:PORT" in message or "IPv6" in message


@pytest.mark.parametrize("text, address", [
    ("127.0.0.1:8786", "tcp://127.0.0.1:8786"),
    (" TCP://Scheduler.local:08786 ", "tcp://Scheduler.local:8786"),
    ("tls://10.0.0.1:8786", "tls://10.0.0.1:8786"),
    ("[::1]:8786", "tcp://[::1]:8786"),
    ("ucx://node-1:13337", "ucx://node-1:13337"),
])
def test_a_good_scheduler_address_is_written_as_dask_expects(text, address):
    assert dask_client.scheduler_address(text) == address


def test_nothing_listening_is_refused_fast(monkeypatch):
    monkeypatch.setattr(dask_client, "REFUSED_GRACE", 0.3)
    with socket.socket() as free:  # a port bound a moment, never listening
        free.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{free.getsockname()[1]}"
    start = time.monotonic()
    with pytest.raises(ConfigError, match=f"^no Dask scheduler at {address}: nothing listens there"):
        connect(address)
    assert time.monotonic() - start < 3


# ----------------------------------------------------------------------------- not a scheduler

def test_a_port_that_never_speaks_times_out_instead_of_hanging():
    address, close = _listener()
    try:
        start = time.monotonic()
        with pytest.raises(ConfigError) as err:
            connect(address, connect_timeout=1.5)
        took = time.monotonic() - start
    finally:
        close()
    assert str(err.value) == (f"no Dask scheduler answered at {address}: the port accepts connections but did not "
                              "answer Dask's handshake within 1.5 s; is it the scheduler's (8786 by default)?")
    assert 1.0 < took < 6


def test_the_cli_bounds_the_wait_for_a_silent_port():
    address, close = _listener()
    try:
        proc, took = _cli("evaluate", SAMPLE / "model_a.parquet", "--engine", "dask", "--scheduler", address,
                          "--no-save", CONNECT_TIMEOUT=2.0)
    finally:
        close()
    _one_line_error(proc, f"no Dask scheduler answered at {address}: the port accepts connections")
    assert took < 12


def test_an_http_server_is_refused_cleanly():
    # Python's http.server waits for a request line (Dask's binary handshake has none): a silent port.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ConfigError, match=r"^no Dask scheduler answered at tcp://127\.0\.0\.1:\d+: "):
            connect(f"tcp://127.0.0.1:{server.server_address[1]}", connect_timeout=1.5)
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_reply_is_not_read_as_a_3_exabyte_frame():
    # A server that answers at once: "HTTP/1.1" read as a frame length is 3.5e18 bytes.
    address, close = _listener(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    try:
        start = time.monotonic()
        with pytest.raises(ConfigError) as err:
            connect(address, connect_timeout=5)
        assert time.monotonic() - start < 4
    finally:
        close()
    assert str(err.value).startswith(f"no Dask scheduler answered at {address}: what answered does not speak "
                                     "Dask's protocol (a web server?")


def test_a_port_that_closes_connections_is_refused():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"

    def serve():
        with contextlib.suppress(OSError):
            while True:
                server.accept()[0].close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(ConfigError, match=f"^no Dask scheduler answered at {address}: the port accepts "
                                              "connections but closes them during Dask's handshake"):
            connect(address, connect_timeout=1.5)
    finally:
        server.close()


def test_tls_without_certificates_is_refused_before_connecting():
    with pytest.raises(ConfigError, match="^tls://127.0.0.1:1 needs TLS certificates"):
        connect("tls://127.0.0.1:1")


def test_a_worker_address_is_told_apart_from_the_scheduler():
    with distributed.LocalCluster(n_workers=1, processes=False, protocol="tcp", dashboard_address=":0",
                                  threads_per_worker=1) as cluster:
        worker = next(iter(cluster.scheduler_info["workers"]))
        with pytest.raises(ConfigError, match="is a Dask worker, not the scheduler"):
            connect(worker, connect_timeout=5)
        level = logging.getLogger("distributed").level
        client = connect(cluster.scheduler_address, connect_timeout=5)  # the scheduler itself is fine
        assert client.scheduler_info()["type"] == "Scheduler"
        assert logging.getLogger("distributed").level == logging.CRITICAL  # quiet while the client lives
        client.close()
        assert logging.getLogger("distributed").level == level


# ----------------------------------------------------------------------------- workers

def test_workers_below_one_or_beyond_reason_are_refused():
    from opis_cli.threads import available_cores

    for workers in (0, -3):
        with pytest.raises(ConfigError, match=rf"^--workers must be >= 1, got {workers}$"):
            local_cluster_client(workers)
    too_many = dask_engine.MAX_WORKERS_PER_CORE * available_cores() + 1
    with pytest.raises(ConfigError, match=rf"^--workers {too_many} is more than 4 worker processes per core"):
        local_cluster_client(too_many)


def test_a_cluster_without_workers_is_an_error_not_a_hang(monkeypatch):
    monkeypatch.setattr(dask_engine, "WORKER_WAIT", 1.0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 100)
    x = rng.normal(size=(100, 4))
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp", dashboard_address=":0") as cluster:
        client = connect(cluster.scheduler_address, connect_timeout=5)
        try:
            with pytest.raises(ConfigError, match=r"has no workers \(none joined within 1 s\): start some"):
                opis_cli.evaluate(x, y, client=client, calib=(0.2, 1.2))
        finally:
            client.close()


class _NoWorkers:
    """A client whose scheduler has no workers (for the bounded wait of a run's tasks)."""

    def nthreads(self):
        return {}


class _Waiting:
    """An as_completed whose tasks never finish."""

    def is_empty(self):
        return False

    def has_ready(self):
        return False


def test_tasks_waiting_without_any_worker_end_in_an_error(monkeypatch):
    monkeypatch.setattr(dask_engine, "WORKER_WAIT", 0.5)
    start = time.monotonic()
    with pytest.raises(ConfigError, match="lost all its workers mid-run and none came back within 0.5 s"):
        list(dask_engine._completed(_NoWorkers(), _Waiting()))
    assert time.monotonic() - start < 4


class _Failed:
    def __init__(self, exc):
        self.exc, self.status = exc, "error"

    def result(self):
        raise self.exc


def test_what_the_cluster_did_to_a_task_is_one_line():
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    client = _NoWorkers()
    lost = FutureCancelledError("k", "scheduler-connection-lost", "Client lost the connection")
    with pytest.raises(ConfigError, match="^lost the connection to the Dask scheduler"):
        dask_engine._result(client, _Failed(lost))
    with pytest.raises(ConfigError, match="^the Dask cluster lost all its workers mid-run, and with them"):
        dask_engine._result(client, _Failed(FutureCancelledError("k", "lost dependencies")))
    with pytest.raises(ConfigError, match="^a Dask worker died 4 times running one task"):
        dask_engine._result(client, _Failed(KilledWorker("k", "tcp://w:1", 3)))
    with pytest.raises(ZeroDivisionError):  # a task's own error is a bug: it keeps its traceback
        dask_engine._result(client, _Failed(ZeroDivisionError()))


def test_both_workers_killed_mid_run_end_in_one_line(capfd):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 40, 3000)
    x = rng.normal(size=(40, 16))[y] + rng.normal(size=(3000, 16))
    levels = {name: logging.getLogger(name).level for name in ("distributed", "distributed.client")}
    client = local_cluster_client(2, 1)
    killed = []

    def progress(stage, done, total):
        if not killed:  # after the first finished task, both worker processes die (their nannies restart them)
            killed.append(True)
            client.run(lambda: threading.Timer(0.05, os._exit, [1]).start())

    start = time.monotonic()
    try:
        with pytest.raises(ConfigError) as err:
            opis_cli.evaluate(x, y, memory_budget=16 << 20, calib=(0.4, 0.9), client=client, progress=progress)
    finally:
        client.close()
    assert killed and time.monotonic() - start < 30
    assert str(err.value).startswith("the Dask cluster lost all its workers mid-run")
    assert client.status == "closed" and client.cluster.status.name == "closed"
    assert {name: logging.getLogger(name).level for name in levels} == levels  # the quiet ends with the client
    time.sleep(0.5)  # what a dying worker or a closing nanny would print
    err_text = capfd.readouterr().err
    assert "Traceback" not in err_text and "distributed." not in err_text, err_text


def test_local_cluster_runs_print_no_traceback(tmp_path):
    from error_cases import _valid_parquet

    # Shutdown chatter came about one run in four, more often on a busy machine: four at once.
    args = ["evaluate", _valid_parquet(tmp_path), "--calib", "0.2:1.2", "--no-save", "-q", "--json", os.devnull,
            "--engine", "dask", "--workers", "1", "--threads", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    command = [str(Path(sys.executable).parent / "opis")]
    procs = [subprocess.Popen([*command, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(4)]
    outcomes = [(p.returncode, err) for p in procs for _, err in [p.communicate(timeout=120)]]
    assert [code for code, _ in outcomes] == [0] * 4, outcomes
    assert all(err == "" for _, err in outcomes), [err for _, err in outcomes]
