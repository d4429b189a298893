"""opis plot through the real entry point: every kind renders the sample data to a non-empty
image of the format its extension names; user mistakes exit 2 with one line."""

from __future__ import annotations

import json

import pytest

from test_cli import SAMPLE, assert_user_error, run, saved_run

MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF", ".svg": b"<?xml"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("plots")  # runs made in-process (saved_run); the plots through the CLI
    saved_run(cwd, SAMPLE / "model_a.parquet", "model_a")
    saved_run(cwd, SAMPLE / "model_b.parquet", "model_b", eer=True)
    return cwd


def _image(path, suffix):
    data = path.read_bytes()
    assert len(data) > 5000 and data.startswith(MAGIC[suffix])
    if suffix == ".svg":
        assert b"<svg" in data[:2000]


@pytest.mark.parametrize("kind, args, suffix", [
    ("curves", [], ".png"),
    ("curves", [], ".svg"),
    ("distributions", [], ".pdf"),
    ("compare", [".opis/runs/model_a", ".opis/runs/model_b"], ".png"),
    ("pareto", [".opis/runs/model_a", ".opis/runs/model_b/report.json"], ".svg"),
    ("roc", [".opis/runs/model_b"], ".png"),
    ("det", [".opis/runs/model_b"], ".svg"),
])
def test_each_kind_renders(runs, kind, args, suffix):
    out = runs / f"{kind}{suffix}"
    proc = run("plot", *args, "--kind", kind, "--out", out, "--dpi", "80", "--title", "t", cwd=runs, check_code=0)
    assert "wrote" in proc.stderr
    _image(out, suffix)


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_default_is_the_last_run_and_every_format_is_reproducible(runs, suffix):
    a, b = runs / f"a{suffix}", runs / f"b{suffix}"
    run("plot", "--out", a, cwd=runs, check_code=0)
    run("plot", ".opis/latest", "--out", b, cwd=runs, check_code=0)
    assert a.read_bytes() == b.read_bytes()  # no timestamps, no random ids (SVG clip paths) in the file


def test_curves_readable_with_many_classes(tmp_path):
    # 2,000 classes: the figure still renders (alpha and width adapt; one legend entry per role).
    import numpy as np

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2000, 12000)
    x = rng.normal(size=(2000, 16))[labels] * 1.5 + rng.normal(size=(12000, 16))
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    np.save(tmp_path / "y.npy", labels)
    run("evaluate", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "-q", cwd=tmp_path, check_code=0)
    run("plot", "--out", tmp_path / "many.png", "--dpi", "60", cwd=tmp_path, check_code=0)
    _image(tmp_path / "many.png", ".png")


def test_no_previous_run(tmp_path):
    assert_user_error(run("plot", "--out", tmp_path / "x.png", cwd=tmp_path), "no previous run")


def test_not_a_report(tmp_path):
    (tmp_path / "foo.json").write_text(json.dumps({"hello": 1}))
    assert_user_error(run("plot", tmp_path / "foo.json", "--out", tmp_path / "x.png"), "is not an opis report")
    (tmp_path / "bad.json").write_bytes(b"\x00\xff garbage")
    assert_user_error(run("plot", tmp_path / "bad.json", "--out", tmp_path / "x.png"), "is not an opis report")


def test_newer_schema_refused(runs, tmp_path):
    report = json.loads((runs / ".opis/runs/model_a/report.json").read_text())
    report["schema_version"] = 99
    (tmp_path / "r.json").write_text(json.dumps(report))
    assert_user_error(run("plot", tmp_path / "r.json", "--kind", "pareto", "--out", tmp_path / "x.png"),
                      "schema version 99")


@pytest.mark.parametrize("args, fragment", [
    (["--out", "x.gif"], "use a .png, .svg or .pdf path"),
    (["--kind", "compare", "--out", "x.png"], "needs two or more runs"),
    ([".opis/runs/model_a", ".opis/runs/model_b", "--out", "x.png"], "draws one run"),
    ([".opis/runs/model_a/report.json", "--kind", "curves", "--out", "y.png"], None),
    ([".opis/runs/nope", "--out", "x.png"], "no report at"),
    (["--dpi", "0", "--out", "x.png"], "--dpi must lie in"),
])
def test_usage_errors(runs, args, fragment):
    proc = run("plot", *args, cwd=runs)
    if fragment is None:  # a report file inside a run directory has its curves beside it
        assert proc.returncode == 0, proc.stderr
    else:
        assert_user_error(proc, fragment)


def test_bare_report_file_has_no_curves(runs, tmp_path):
    (tmp_path / "r.json").write_text((runs / ".opis/runs/model_a/report.json").read_text())
    assert_user_error(run("plot", tmp_path / "r.json", "--out", tmp_path / "x.png"), "no per-class curves")
    run("plot", tmp_path / "r.json", "--kind", "pareto", "--out", tmp_path / "p.png", check_code=0)


def test_roc_and_det_need_an_eer_run(runs):
    proc = run("plot", ".opis/runs/model_a", "--kind", "det", "--out", runs / "x.png", cwd=runs)
    assert_user_error(proc, "evaluate with --eer")
    assert not (runs / "x.png").exists()


def test_curves_of_a_run_without_pooled_rows(runs, tmp_path):
    # Runs saved before schema 4 have no 'pooled' curve: the plot goes without the FAR axis.
    import shutil

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    old = tmp_path / "old"
    shutil.copytree(runs / ".opis/runs/model_a", old)
    table = pq.read_table(old / "curves.parquet")
    pq.write_table(table.filter(pc.not_equal(table.column("curve"), "pooled")), old / "curves.parquet")
    run("plot", old, "--out", tmp_path / "c.png", check_code=0)
    _image(tmp_path / "c.png", ".png")


def test_distributions_show_every_positive_pair(runs):
    # The x range holds the whole positive tail (the hard positives are the point of the plot).
    import numpy as np

    import opis_cli
    from opis_cli.report.plot import _draw

    run_ = opis_cli.load_run(runs / ".opis/runs/model_b")
    plt, fig = _draw([run_], "distributions", 80, None)
    d = run_.distributions
    try:
        panels = [ax for ax in fig.axes if ax.patches]
        assert len(panels) == len(d.scopes)
        for ax, s in zip(panels, range(len(d.scopes))):
            nz = np.flatnonzero(d.pos[s])
            x0, x1 = ax.get_xlim()
            assert x0 <= d.edges[nz[0]] and x1 >= d.edges[nz[-1] + 1], (d.scopes[s], x0, x1)
    finally:
        plt.close(fig)


def _boxes(fig, artists):
    renderer = fig.canvas.get_renderer()
    return [tuple(a.get_window_extent(renderer).extents) for a in artists]


def test_labels_legends_and_ticks_do_not_collide(runs):
    # Pareto: nearby runs' names neither overprint nor leave the axes; compare: the worst classes'
    # labels right of each frame, the legend below the axes; operating points: tick labels apart.
    import copy

    import numpy as np

    import opis_cli
    from opis_cli.report.plot import _draw, operating_points_figure
    from opis_cli.report.plot_labels import overlapping_pairs

    base = opis_cli.load_run(runs / ".opis/runs/model_a")
    near = []
    for i in range(6):
        r = copy.copy(base)
        r.report = copy.deepcopy(base.report)
        r.report["metrics"]["opis"] *= 1 + 0.01 * i
        r.name = f"model-a-variant-{i}"
        near.append(r)
    plt, fig = _draw(near + [opis_cli.load_run(runs / ".opis/runs/model_b")], "pareto", 80, None)
    try:
        ax = fig.axes[0]
        labels = [t for t in ax.texts if t.get_text()]
        boxes = _boxes(fig, labels)
        frame = ax.get_window_extent(fig.canvas.get_renderer()).extents
        assert len(labels) == 7 and not overlapping_pairs(boxes)
        assert all(b[0] >= frame[0] and b[2] <= frame[2] and b[1] >= frame[1] and b[3] <= frame[3] for b in boxes)
    finally:
        plt.close(fig)

    plt, fig = _draw([base, opis_cli.load_run(runs / ".opis/runs/model_b")], "compare", 80, None)
    try:
        renderer = fig.canvas.get_renderer()
        panels = [ax for ax in fig.axes if ax.collections]  # the two curve panels (not their FAR twins)
        assert len(panels) == 2
        for k, ax in enumerate(panels):
            frame = ax.get_window_extent(renderer)
            names = [t for t in ax.texts if t.get_text() and "OPIS" not in t.get_text()]
            assert names
            for b in _boxes(fig, names):
                assert b[0] >= frame.x1  # right of the frame, not across it
                if k + 1 < len(panels):
                    assert b[2] <= panels[k + 1].get_window_extent(renderer).x0  # and short of the next panel
        legend = panels[0].get_legend()
        assert legend is not None and legend.get_window_extent(renderer).y1 <= panels[0].get_window_extent(renderer).y0
    finally:
        plt.close(fig)

    for fars in (np.geomspace(1e-6, 0.2, 30), np.linspace(8e-4, 1.3e-3, 30), np.geomspace(2e-4, 3e-2, 30)):
        report = {"classes": [{"label": f"c{i}", "far": float(f), "frr": 0.1, "size": 5} for i, f in enumerate(fars)],
                  "threshold": {"value": 0.5, "chosen_on": "given"}, "pooled": {"far": 1e-3, "frr": 0.1},
                  "worst_by_utility": ["c0", "c1", "c2"]}
        plt, fig = operating_points_figure(report)
        try:
            fig.canvas.draw()
            ticks = [t for t in fig.axes[0].get_xticklabels() if t.get_text() and t.get_visible()]
            assert len(ticks) >= 2 and not overlapping_pairs(_boxes(fig, ticks)), [t.get_text() for t in ticks]
            names = [t for t in fig.axes[0].texts if t.get_text()]
            assert len(names) == 3 and not overlapping_pairs(_boxes(fig, names))
        finally:
            plt.close(fig)
