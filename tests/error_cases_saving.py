"""Error cases of the saving area (issue 15), registered into tests/error_cases.py's catalogue.

Each refusal below happens before anything is written: no run directory, no staging directory
(``runs/.new.*``) and no temporary link (``.latest.*.tmp``) is left, and ``latest`` is unchanged.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from error_cases import _run_quick, _valid_parquet, case


def _nothing_written(d: Path, proc) -> None:
    out = d / ".opis"
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*")
                  if p.name.startswith((".new.", ".latest.")) or p.name.endswith(".tmp"))
    assert left == [], f"temporary files left behind: {left}"
    runs = sorted(p.name for p in (out / "runs").iterdir()) if (out / "runs").is_dir() else []
    assert runs in ([], ["ok"]), f"a run was saved: {runs}"
    if runs:
        assert (out / "latest").resolve() == (out / "runs" / "ok").resolve()


def _evaluate(d: Path, *extra) -> list:
    return ["evaluate", _valid_parquet(d), "--calib", "0.2:1.2", "--out-dir", d / ".opis", *extra]


@case("latest-is-directory", "`.opis/latest` is a real directory, not the link opis keeps there",
      after=_nothing_written, section="outputs")
def _(d):
    (d / ".opis" / "latest").mkdir(parents=True)
    return _evaluate(d)


@case("run-name-too-long", "--name longer than the file system allows for a name (300 characters)",
      after=_nothing_written, section="outputs")
def _(d):
    return _evaluate(d, "--name", "x" * 300)


@case("run-name-path", "--name that is a path, not a name (it would leave runs/)", after=_nothing_written,
      section="outputs")
def _(d):
    return _evaluate(d, "--name", "../elsewhere")


@case("run-name-taken", "--name of a run that already exists (an explicit name is never changed)",
      after=_nothing_written, section="outputs")
def _(d):
    _run_quick(d)
    return _evaluate(d, "--name", "ok")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _leftovers_cleaned(d: Path, proc) -> None:
    out = d / ".opis"
    names = sorted(p.name for p in (out / "runs").iterdir())
    assert len(names) == 3 and names[0].startswith(".new.1-") and names[1:] == ["next", "ok"], names
    assert not [p for p in out.iterdir() if p.name.startswith(".latest.")], "a dead run's temporary link was kept"
    assert (out / "latest").resolve() == (out / "runs" / "next").resolve()


@case("killed-run-leftovers", "A previous run was killed (kill -9) while saving: its staging directory and "
      "temporary link are removed by the next save; a live save's are kept", code=0, after=_leftovers_cleaned,
      section="outputs")
def _(d):
    from opis_cli.report.run_store import owner_tag

    _run_quick(d)
    runs = d / ".opis" / "runs"
    host = owner_tag().split("-")[1]  # this host's tag: the PIDs can be checked
    dead = f"{_dead_pid()}-{host}"
    (runs / f".new.{dead}.abcd1234").mkdir()
    (runs / f".new.{dead}.abcd1234" / "report.json").write_text("{")
    (runs / f".new.1-{host}.live1234").mkdir()  # PID 1 is alive: a save in progress
    (d / ".opis" / f".latest.{dead}.abcd1234.tmp").symlink_to("runs/ok")
    return _evaluate(d, "--name", "next", "-q")


def _input_intact(name: str):
    def check(d: Path, proc) -> None:
        import numpy as np

        data = (d / name).read_bytes()
        assert data.startswith(b"\x93NUMPY") or data.startswith(b"PAR1"), f"{name} was overwritten"
        assert not (d / ".opis").exists(), "a run was saved by a refused command"
        if name.endswith(".npy"):
            np.load(d / name)
    return check


def _evaluate_npy_with_json(d: Path, json_name: str) -> list:
    """``opis evaluate emb.npy --labels labels.npy --json DIR/json_name`` on fresh files."""
    import numpy as np

    from error_cases import _rows

    x, y = _rows()
    np.save(d / "emb.npy", x)
    np.save(d / "labels.npy", y)
    return ["evaluate", d / "emb.npy", "--labels", d / "labels.npy", "--out-dir", d / ".opis", "--json",
            d / json_name]


@case("json-overwrites-input", "--json names the input file itself", after=_input_intact("emb.npy"),
      section="outputs")
def _(d):
    return _evaluate_npy_with_json(d, "emb.npy")


@case("json-overwrites-labels", "--json names the --labels file", after=_input_intact("labels.npy"),
      section="outputs")
def _(d):
    return _evaluate_npy_with_json(d, "labels.npy")


@case("thresholds-json-overwrites-input", "opis thresholds --json names its input table",
      after=_input_intact("emb.parquet"), section="outputs")
def _(d):
    return ["thresholds", _valid_parquet(d), "--target-far", "0.05", "--json", d / "emb.parquet"]


@case("plot-overwrites-report", "opis plot --out names a file of the run it draws", section="outputs")
def _(d):
    run = _run_quick(d)
    return ["plot", run, "--out", Path(run) / "report.json"]


@case("disk-full-after-save", "The disk fills while --json is written, after the run was saved", section="outputs")
def _(d):
    return _evaluate(d, "--name", "kept", "--json", "/dev/full")
