"""Saving runs safely (opis_cli.report.run_store, opis_cli.report.runs): a name taken concurrently, Ctrl-C and
SIGTERM at every step of a save, leftovers of killed saves, an unusable out-dir or ``latest``,
run names, permissions, and output paths that would destroy an input."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import opis_cli
from opis_cli.errors import ConfigError, InputError, OpisError
from opis_cli.report.run_store import STALE_AFTER, DeferredSignals, InterruptedAfterSave, owner_tag
from opis_cli.report.runs import atomic_write_text, check_out_dir, check_output_path, clean_leftovers, save_run

needs_main_thread = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                       reason="signal handlers can only be set from the main thread")


@pytest.fixture(autouse=True)
def _sigint_deliverable():
    """Under a background job SIGINT starts ignored (and Python leaves it so): these tests send it,
    so give it Python's usual handler for their duration."""
    import signal

    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def report():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(6), 5)
    x = rng.normal(size=(6, 8))[labels] + rng.normal(size=(30, 8))
    return opis_cli.evaluate(x, labels, calib=(0.2, 1.2), thresholds=11)


def temporaries(root: Path) -> list[str]:
    """Everything a save may leave only while it runs: staging directories and temporary files."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.startswith((".new.", ".latest.")) or p.name.endswith(".tmp"))


def latest_name(root: Path) -> str | None:
    link = root / "latest"
    return link.resolve().name if os.path.lexists(link) else None


# ----------------------------------------------------------------------------- 1. a name taken concurrently

def _take_name_first(monkeypatch, runs: Path, names: set[str]):
    """os.rename that lets 'another process' publish a run under each of ``names`` just before."""
    real = os.rename

    def rename(src, dst, *args, **kwargs):
        if Path(dst).parent == runs and Path(dst).name in names:
            names.discard(Path(dst).name)
            Path(dst).mkdir()
            (Path(dst) / "report.json").write_text("{}")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)


def test_explicit_name_taken_between_check_and_rename_is_refused_cleanly(tmp_path, report, monkeypatch):
    save_run(report, tmp_path, "before")
    _take_name_first(monkeypatch, tmp_path / "runs", {"same"})
    with pytest.raises(ConfigError, match=r"^a run named same already exists in .* \(choose another --name\)$"):
        save_run(report, tmp_path, "same")
    assert json.loads((tmp_path / "runs" / "same" / "report.json").read_text()) == {}  # the winner's, intact
    assert latest_name(tmp_path) == "before" and temporaries(tmp_path) == []


def test_default_name_taken_concurrently_moves_to_the_next_free_name(tmp_path, report, monkeypatch):
    from opis_cli.report.run_store import default_run_name

    base = default_run_name(report.input.get("path"))
    _take_name_first(monkeypatch, tmp_path / "runs", {base, f"{base}-2"})
    run = save_run(report, tmp_path)
    assert run.name == f"{base}-3" and latest_name(tmp_path) == run.name
    assert json.loads((run / "run.json").read_text())["name"] == run.name
    assert temporaries(tmp_path) == []


def _race(report, tmp_path, monkeypatch, name):
    """Two threads saving at once, both past every check when they rename."""
    barrier = threading.Barrier(2, timeout=10)
    real = os.rename
    passed = set()

    def rename(src, dst, *args, **kwargs):
        if threading.get_ident() not in passed:
            passed.add(threading.get_ident())
            barrier.wait()
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    results = []

    def save():
        try:
            results.append(save_run(report, tmp_path, name))
        except BaseException as exc:  # noqa: BLE001  (what the test inspects)
            results.append(exc)

    threads = [threading.Thread(target=save) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_two_saves_of_one_explicit_name_at_once_one_wins_one_is_refused(tmp_path, report, monkeypatch):
    results = _race(report, tmp_path, monkeypatch, "same")
    saved = [r for r in results if isinstance(r, Path)]
    refused = [r for r in results if not isinstance(r, Path)]
    assert len(saved) == 1 and len(refused) == 1, results
    assert isinstance(refused[0], ConfigError) and "a run named same already exists" in str(refused[0])
    assert latest_name(tmp_path) == "same" and temporaries(tmp_path) == []


def test_two_saves_of_one_default_name_at_once_get_distinct_names(tmp_path, report, monkeypatch):
    results = _race(report, tmp_path, monkeypatch, None)
    assert all(isinstance(r, Path) for r in results), results
    names = sorted(r.name for r in results)
    assert names[1] == names[0] + "-2"
    assert latest_name(tmp_path) in names and temporaries(tmp_path) == []


def test_two_processes_saving_one_name(tmp_path, report):
    """Real processes, no hooks: exactly one saves, the other says the name is taken; no traceback."""
    import pickle

    (tmp_path / "report.pickle").write_bytes(pickle.dumps(report))
    script = textwrap.dedent(f"""
        import pickle, sys, time
        from pathlib import Path
        import pyarrow.parquet
        from opis_cli.errors import OpisError
        from opis_cli.report.runs import save_run
        r = pickle.loads(Path({str(tmp_path / "report.pickle")!r}).read_bytes())
        Path({str(tmp_path)!r}, "ready" + sys.argv[1]).touch()
        go = Path({str(tmp_path / "go")!r})
        while not go.exists():
            time.sleep(0.001)
        try:
            save_run(r, {str(tmp_path / "out")!r}, "same")
            print("saved")
        except OpisError as exc:
            print("refused:", exc)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()  # both let go together
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    lines = sorted(out.strip() for out, _ in outs)
    assert lines[1] == "saved" and lines[0].startswith("refused: a run named same already exists"), outs
    assert temporaries(tmp_path / "out") == []


# ----------------------------------------------------------------------------- 2. signals at every step

class Terminated(KeyboardInterrupt):
    """What the CLI's SIGTERM handler raises (opis_cli.cli.common.Terminated)."""

    exit_code = 143


_STEPS = ("mkdir", "open", "fsync", "rename", "replace", "symlink", "scandir")


def _count_steps(report, root: Path, monkeypatch) -> int:
    save_run(report, root, "good")  # as in the test: runs/ and latest exist
    calls = []
    for fn in _STEPS:
        real = getattr(os, fn)
        monkeypatch.setattr(os, fn, lambda *a, _real=real, **k: (calls.append(1), _real(*a, **k))[1])
    save_run(report, root, "probe")
    monkeypatch.undo()
    return len(calls)


@needs_main_thread
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_at_any_step_of_a_save_is_truthful_and_leaves_nothing(tmp_path, report, monkeypatch, signum):
    steps = _count_steps(report, tmp_path / "probe", monkeypatch)
    assert steps > 10
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(Terminated()))
    outcomes = set()
    try:
        for k in range(steps):
            root = tmp_path / f"k{k}"
            save_run(report, root, "good")
            count = [0]
            for fn in _STEPS:
                real = getattr(os, fn)

                def step(*a, _real=real, **kw):
                    count[0] += 1
                    if count[0] == k + 1:
                        os.kill(os.getpid(), signum)
                    return _real(*a, **kw)

                monkeypatch.setattr(os, fn, step)
            with pytest.raises(KeyboardInterrupt) as info:
                save_run(report, root, "new")
            monkeypatch.undo()
            exc = info.value
            expected_code = 143 if signum == signal.SIGTERM else 130
            if isinstance(exc, InterruptedAfterSave):
                outcomes.add("saved")
                assert exc.exit_code == expected_code and exc.run_dir == root / "runs" / "new"
                assert str(exc).endswith(f"after the run was saved as {root / 'runs' / 'new'}")
                assert sorted(p.name for p in exc.run_dir.iterdir()) == [
                    "curves.parquet", "distributions.parquet", "report.json", "run.json"]
                assert latest_name(root) == "new", k
            else:
                outcomes.add("not saved")
                assert getattr(exc, "exit_code", 130) == expected_code
                assert not (root / "runs" / "new").exists(), f"step {k}: a run was saved but the stop says not"
                assert latest_name(root) == "good", k
            assert temporaries(root) == [], (k, temporaries(root))
    finally:
        monkeypatch.undo()
        signal.signal(signal.SIGTERM, previous)
    assert outcomes == {"saved", "not saved"}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@needs_main_thread
def test_deferred_signals_restore_handlers_and_drop_the_signal_when_the_body_fails():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(OpisError, match="boom"):
        with DeferredSignals() as held:
            os.kill(os.getpid(), signal.SIGINT)
            assert held.pending == signal.SIGINT
            raise OpisError("boom")
    assert signal.getsignal(signal.SIGINT) is before
    with pytest.raises(KeyboardInterrupt) as info:  # nothing saved: a plain stop, not "after the run was saved"
        with DeferredSignals():
            os.kill(os.getpid(), signal.SIGINT)
    assert not isinstance(info.value, InterruptedAfterSave)


def test_saving_from_another_thread_works_without_deferral(tmp_path, report):
    out = []
    t = threading.Thread(target=lambda: out.append(save_run(report, tmp_path, "threaded")))
    t.start()
    t.join(30)
    assert out and latest_name(tmp_path) == "threaded" and temporaries(tmp_path) == []


# ----------------------------------------------------------------------------- 3. leftovers of killed saves

def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_of_dead_or_old_saves_are_cleaned_and_live_ones_kept(tmp_path, report):
    runs = tmp_path / "runs"
    runs.mkdir()
    host = owner_tag().split("-")[1]
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        def staging(name, old=False):
            p = runs / name
            p.mkdir()
            (p / "report.json").write_text("{}")
            if old:
                os.utime(p, (p.stat().st_atime, p.stat().st_mtime - STALE_AFTER - 60))
            return p

        gone = [staging(f".new.{dead}-{host}.aaaa"), staging(f".new.{live.pid}-{host}.bbbb", old=True)]
        kept = [staging(f".new.{live.pid}-{host}.cccc"), staging(f".new.{os.getpid()}-{host}.dddd"),
                staging(f".new.{dead}-ffffffff.eeee")]  # another host's: liveness unknown, young: kept
        os.symlink("runs/x", tmp_path / f".latest.{dead}-{host}.1234.tmp")
        os.symlink("runs/x", tmp_path / f".latest.{dead}.tmp")  # the older naming, without a host tag
        os.symlink("runs/x", tmp_path / f".latest.{live.pid}-{host}.5678.tmp")
        user_hidden = runs / ".mine"  # not opis's: never touched
        user_hidden.mkdir()
        save_run(report, tmp_path, "next")
        assert clean_leftovers(tmp_path) == []  # nothing more is stale while the owner lives
    finally:
        live.kill()
        live.wait()
    assert not any(p.exists() for p in gone)
    assert all(p.exists() for p in kept) and user_hidden.exists()
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".latest."))
    assert left == [f".latest.{live.pid}-{host}.5678.tmp"]


# ----------------------------------------------------------------------------- 4. the out-dir, latest and names

def test_latest_that_is_a_directory_is_refused_before_anything_is_written(tmp_path, report):
    (tmp_path / "latest").mkdir()
    message = rf"^cannot save runs in {tmp_path}: {tmp_path / 'latest'} is a directory, not the link"
    with pytest.raises(InputError, match=message):
        check_out_dir(tmp_path, "x")
    with pytest.raises(InputError, match=message):
        save_run(report, tmp_path, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest"]


def test_latest_as_a_file_is_ours_and_is_replaced(tmp_path, report):
    # The one-line form written where symbolic links are unavailable.
    (tmp_path / "latest").write_text("runs/old\n")
    check_out_dir(tmp_path, "x")
    assert latest_name(tmp_path) is not None
    save_run(report, tmp_path, "x")
    assert (tmp_path / "latest").is_symlink() and latest_name(tmp_path) == "x"


def test_out_dir_and_runs_must_be_writable_directories(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match=r"^cannot create run directory .*/file/runs: .*/file is not a directory$"):
        check_out_dir(tmp_path / "file")
    with pytest.raises(InputError, match=r"^cannot create run directory .*/file/sub/runs: .*/file is not a directory$"):
        check_out_dir(tmp_path / "file" / "sub")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "runs").write_text("")
    with pytest.raises(InputError, match=r"^cannot save runs in .*/out/runs: it is not a directory$"):
        check_out_dir(tmp_path / "out")
    check_out_dir(tmp_path / "new" / "deeper")  # to be created: fine, and not created by the check
    assert not (tmp_path / "new").exists()
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == locked else real(p, mode, **k))
    with pytest.raises(InputError, match=r"^cannot create run directory .*/locked/runs: no permission to write in "
                                         r".*/locked$"):
        check_out_dir(locked)
    (locked / "runs").mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == locked / "runs" else real(p, mode, **k))
    with pytest.raises(InputError, match=r"^cannot save runs in .*/locked/runs: no permission to write in it$"):
        check_out_dir(locked)


@pytest.mark.parametrize("name, message", [
    ("", "the run name is empty"),
    ("a/b", "contains '/'"),
    ("..", "starts with '.'"),
    (".hidden", "starts with '.'"),
    ("two\nlines", "contains a character that cannot be shown"),
    ("x" * 300, "the run name is 300 bytes long; the file system allows at most 255"),
    ("é" * 128, "the run name is 256 bytes long"),
])
def test_invalid_run_names_are_refused_before_work(tmp_path, name, message):
    with pytest.raises(ConfigError, match=message):
        check_out_dir(tmp_path, name)


def test_a_name_of_the_longest_allowed_length_saves(tmp_path, report):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    run = save_run(report, tmp_path, "n" * limit)
    assert run.name == "n" * limit and latest_name(tmp_path) == run.name and temporaries(tmp_path) == []
    with pytest.raises(ConfigError, match=f"a run named {run.name} already exists"):  # taken: refused before work
        check_out_dir(tmp_path, run.name)


def test_failures_after_the_rename_say_the_run_was_saved_and_leave_no_temporary(tmp_path, report, monkeypatch):
    save_run(report, tmp_path, "good")
    real = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst).name == "latest":
            raise OSError(28, "No space left on device")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OpisError, match=r"^the run was saved as .*/runs/new, but .*/latest could not be pointed at it: "
                                        r"No space left on device$"):
        save_run(report, tmp_path, "new")
    assert (tmp_path / "runs" / "new" / "report.json").is_file()
    assert latest_name(tmp_path) == "good" and temporaries(tmp_path) == []


def test_failures_while_writing_leave_no_staging(tmp_path, report, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    import pyarrow.parquet as pq

    monkeypatch.setattr(pq, "write_table", full)
    with pytest.raises(OpisError, match="No space left on device"):
        save_run(report, tmp_path, "new")
    assert list((tmp_path / "runs").iterdir()) == [] and temporaries(tmp_path) == []


# ----------------------------------------------------------------------------- 5. permissions

@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_run_directories_and_files_honour_the_umask(tmp_path, report, umask):
    old = os.umask(umask)
    try:
        run = save_run(report, tmp_path, "perm")
        out = atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(run.stat().st_mode) == 0o777 & ~umask
    for f in [*run.iterdir(), out]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f


# ----------------------------------------------------------------------------- 6. output paths

def test_output_path_that_is_an_input_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "emb.parquet").write_bytes(b"data")
    with pytest.raises(InputError, match=r"^--json emb.parquet: it is the input emb.parquet; writing there would"):
        check_output_path("emb.parquet", ["emb.parquet", None], option="--json")
    os.link("emb.parquet", "hard.json")
    os.symlink("emb.parquet", "soft.json")
    for alias in ("hard.json", "soft.json", "./sub/../emb.parquet", str(tmp_path / "emb.parquet")):
        with pytest.raises(InputError, match="it is the input"):
            check_output_path(alias, [None, "emb.parquet"])
    with pytest.raises(InputError, match="it is the input"):  # neither exists yet: compared as resolved paths
        check_output_path("x/../later.json", ["later.json"])
    check_output_path("r.json", ["emb.parquet"], option="--json")


def test_output_path_in_a_missing_or_unusable_directory_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"^--json nodir/r.json: the directory nodir does not exist$"):
        check_output_path("nodir/r.json", [], option="--json")
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match=r"^f/r.json: f is not a directory$"):
        check_output_path("f/r.json", [])
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match=r"^--json d: it is a directory$"):
        check_output_path("d", [], option="--json")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == Path("d") else real(p, mode, **k))
    with pytest.raises(InputError, match=r"^--json d/r.json: no permission to write in the directory d$"):
        check_output_path("d/r.json", [], option="--json")


    for path in (None, "-", "/dev/null", "/dev/stdout"):  # always fine
        check_output_path(path, ["/dev/zero"], option="--json")
