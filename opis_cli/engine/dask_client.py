"""Dask clients opis can rely on (optional extra: ``pip install 'opis-cli[dask]'``).

distributed's Client is made for notebooks: a bad address gives a traceback, a port that accepts
and never speaks hangs it for ever, an HTTP server's reply read as a frame length asks for
exabytes, and stopping a local cluster can print tracebacks of connections closing. Here:

* :func:`scheduler_address` checks a ``--scheduler`` value, saying what is wrong with it;
* :func:`probe` tries the address with plain sockets, then Dask's handshake, within one deadline;
* :func:`quiet_logs` keeps distributed's log records off stderr while opis drives a cluster (they
  repeat a failure opis reports itself in one line, or are shutdown chatter);
* :func:`client_class` is a Client whose close() also closes its local cluster, then the quiet.

Each failure is one ConfigError (exit code 2) saying what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import socket
import threading
import time

from opis_cli.errors import ConfigError

REFUSED_GRACE = 2.0  # s: a refused connection is retried this long (a scheduler still starting up)
CLOSE_TIMEOUT = 20.0  # s: each for closing the client and its local cluster
TIMEOUTS = (TimeoutError, asyncio.TimeoutError)  # distinct classes before Python 3.11
_SCHEMES = ("tcp", "tls", "ucx", "ws", "wss")  # distributed's network protocols (HOST:PORT addresses)
_EXPECTED = "give the scheduler's address, tcp://HOST:PORT (a Dask scheduler listens on port 8786 by default)"


def scheduler_address(text: str) -> str:
    """``text`` (a --scheduler value) as PROTOCOL://HOST:PORT (HOST:PORT means tcp, as in Dask), or
    ConfigError saying what is wrong: Dask's own answer to a bad address is a traceback or a wait."""
    import ipaddress
    import shlex

    shown = f"--scheduler {shlex.quote(text) if text.isprintable() else repr(text)}"  # one line, always
    m = re.fullmatch(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", text.strip(), re.S)
    scheme, rest = (m.group(1).lower(), m.group(2)) if m else ("tcp", text.strip())
    if scheme in ("http", "https"):
        raise ConfigError(f"{shown} is a web address (the dashboard's?); {_EXPECTED}")
    if scheme == "inproc":  # a scheduler in this very process (Python API): Dask checks it
        return text.strip()
    if scheme not in _SCHEMES:
        raise ConfigError(f"{shown}: unknown protocol {scheme!r} (Dask's are {', '.join(_SCHEMES)}); {_EXPECTED}")
    if rest.count(":") > 1 and not rest.startswith("["):
        raise ConfigError(f"{shown}: write an IPv6 address in brackets, as in {scheme}://[::1]:8786")
    m = re.fullmatch(r"\[([^\]]*)\](?::(.*))?|([^:\[\]]*)(?::(.*))?", rest, re.S)
    if m is None:
        raise ConfigError(f"{shown} is not an address; {_EXPECTED}")
    v6, port = m.group(1), m.group(2) if m.group(1) is not None else m.group(4)
    host = f"[{v6}]" if v6 is not None else m.group(3)
    try:
        if v6 is not None:
            ipaddress.IPv6Address(v6.split("%")[0])  # ValueError if it is not one
        valid = v6 is not None or re.fullmatch(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?", host) is not None
    except ValueError:
        valid = False
    if not valid and host == text.strip():
        raise ConfigError(f"{shown} is not an address; {_EXPECTED}")
    if not valid:
        raise ConfigError(f"{shown}: {host!r} is not a host name or IP address; {_EXPECTED}")
    if not port:
        raise ConfigError(f"{shown} has no port; {_EXPECTED}")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ConfigError(f"{shown}: the port must be a number from 1 to 65535, got {port!r}; {_EXPECTED}")
    return f"{scheme}://{host}:{int(port)}"


def probe(address: str, timeout: float) -> None:
    """ConfigError unless a Dask scheduler answers at ``address`` within ``timeout`` s. Dask's
    Client leaves its handshake unbounded: a port that accepts and never speaks hangs it, and an
    HTTP reply read as a frame length asks for exabytes. So plain sockets try the name and the
    port first (a refusal fails fast), then Dask's handshake and an ``identity`` request run in a
    thread of their own (the caller may be in an event loop), all within the one deadline."""
    scheme, _, loc = address.partition("://")
    if scheme not in ("tcp", "tls", "ws", "wss"):  # ucx is not TCP: the Client's own timeout bounds it
        return
    from distributed.comm import connect as comm_connect
    from distributed.security import Security

    connection_args = Security().get_connection_args("client")
    if scheme in ("tls", "wss") and connection_args.get("ssl_context") is None:
        raise ConfigError(f"{address} needs TLS certificates: set Dask's distributed.comm.tls configuration "
                          "(ca-file, client.cert, client.key)")
    host, _, port = loc.rpartition(":")
    deadline = time.monotonic() + timeout
    _tcp_check(address, host.strip("[]"), int(port), deadline, timeout)
    left = max(0.05, deadline - time.monotonic())

    async def identity():
        comm = await comm_connect(address, timeout=left, **connection_args)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    outcome: dict = {}

    def run():
        try:
            outcome["reply"] = asyncio.run(asyncio.wait_for(identity(), left))
        except BaseException as exc:  # handed over to the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="opis-dask-probe", daemon=True)
    thread.start()
    thread.join(left + 2.0)  # wait_for ends the thread's loop in time; this bounds the rest
    error, reply = outcome.get("error"), outcome.get("reply")
    if thread.is_alive() or isinstance(error, TIMEOUTS):
        raise ConfigError(f"no Dask scheduler answered at {address}: the port accepts connections but did not "
                          f"answer Dask's handshake within {timeout:g} s; is it the scheduler's (8786 by default)?")
    if isinstance(error, OSError) and scheme in ("tls", "wss"):  # certificates refused, most likely
        raise ConfigError(f"no Dask scheduler answered at {address}: {cause(error)}")
    if isinstance(error, OSError):  # closed by the other side (Dask's connect retries that, then gives up)
        raise ConfigError(f"no Dask scheduler answered at {address}: the port accepts connections but closes them "
                          "during Dask's handshake; is it the scheduler's (8786 by default)?")
    kind = reply.get("type") if error is None and isinstance(reply, dict) else None
    if kind in ("Worker", "Nanny"):
        raise ConfigError(f"{address} is a Dask {kind.lower()}, not the scheduler; {_EXPECTED}")
    if kind != "Scheduler":  # garbage read as frame lengths, undecodable frames, a stranger's reply
        raise ConfigError(f"no Dask scheduler answered at {address}: what answered does not speak Dask's protocol "
                          f"(a web server? the dashboard's port, 8787?); {_EXPECTED}")


def _tcp_check(address: str, host: str, port: int, deadline: float, timeout: float) -> None:
    """ConfigError unless ``host`` resolves and a TCP connection to it opens before ``deadline``."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ConfigError(f"no Dask scheduler at {address}: cannot find the host {host!r}; check the name") from None
    refused_until = min(deadline, time.monotonic() + REFUSED_GRACE)
    while True:
        try:
            socket.create_connection((host, port), timeout=max(0.05, deadline - time.monotonic())).close()
            return
        except ConnectionRefusedError:
            if time.monotonic() >= refused_until:
                raise ConfigError(f"no Dask scheduler at {address}: nothing listens there (connection refused); "
                                  "start the scheduler (dask scheduler), or check the host and port") from None
            time.sleep(0.1)
        except (socket.timeout, *TIMEOUTS):
            raise ConfigError(f"no Dask scheduler answered at {address}: no TCP connection within {timeout:g} s "
                              "(a wrong host? a firewall?)") from None
        except OSError as exc:
            raise ConfigError(f"no Dask scheduler at {address}: {cause(exc)}") from None


def cause(exc: BaseException) -> str:
    """An exception as one short line (a ConfigError message is one line)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# ----------------------------------------------------------------------------- quiet logs, closing

_NOISY = ("distributed", "tornado", "asyncio", "bokeh")  # distributed's loggers and its event loop's


def _noisy_loggers() -> list[logging.Logger]:
    """The loggers deciding what distributed prints: the _NOISY roots, and those below them with a
    level of their own (distributed sets one on distributed.client, for one)."""
    below = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
             if name.split(".")[0] in _NOISY and name not in _NOISY]
    return [logging.getLogger(name) for name in _NOISY] + [lg for lg in below if lg.level != logging.NOTSET]


def quiet_logs() -> contextlib.ExitStack:
    """The _NOISY loggers at CRITICAL until the returned stack is closed. What they log while opis
    drives a cluster repeats a failure opis reports itself in one line (a lost worker, a lost
    scheduler), or is shutdown chatter: connections closed as the cluster stops, "event loop was
    unresponsive", a worker killed after its grace period; ERROR records included."""
    stack = contextlib.ExitStack()
    for lg in _noisy_loggers():
        stack.callback(lg.setLevel, lg.level)
        lg.setLevel(logging.CRITICAL)
    return stack


def quiet_workers_plugin():
    """A WorkerPlugin (built here: distributed is optional) silencing each worker of a local
    cluster as it joins, including those a nanny restarts after a crash."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class QuietWorkers(WorkerPlugin):
        idempotent = True

        def setup(self, worker):
            quiet_logs()  # the stack that would restore the levels is dropped: quiet for good

    return QuietWorkers()


@functools.lru_cache(maxsize=None)
def client_class():
    """``distributed.Client`` whose close() also closes the local cluster it was made with (the
    client first, then the cluster, which stops the workers before the scheduler; each with a
    timeout), then ends the quiet logging. ConfigError without the dask extra."""
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("--engine dask needs the dask extra: pip install 'opis-cli[dask]'") from None

    class OpisClient(Client):
        _opis_cluster = None
        _opis_life = None

        def adopt(self, cluster, life: contextlib.ExitStack) -> None:
            self._opis_cluster, self._opis_life = cluster, life

        def close(self, timeout=None):
            """Close the client, then its local cluster. A slow or failed close is not an error:
            by then the run has its results, or a failure of its own to report."""
            try:
                with contextlib.suppress(Exception):
                    super().close(timeout=CLOSE_TIMEOUT if timeout is None else timeout)
                cluster, self._opis_cluster = self._opis_cluster, None
                if cluster is not None:
                    with contextlib.suppress(Exception):
                        cluster.close(timeout=CLOSE_TIMEOUT)
            finally:
                life, self._opis_life = self._opis_life, None
                if life is not None:
                    life.close()

    return OpisClient
