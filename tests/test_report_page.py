"""opis report: one self-contained HTML page, through the real entry point, and rendered in a real
browser (headless Chromium; those tests are skipped where it is not installed)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

import opis_cli
from opis_cli.pages.html_report import SVG_MAX_CLASSES, report_page
from opis_cli.report.runs import SavedRun

from test_cli import SAMPLE, assert_user_error, run, saved_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: chromium)")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("page")
    # Runs made in-process (saved_run: the command's own library call), on a pinned range (no
    # calibration pass): the page is under test, through the CLI.
    saved_run(cwd, SAMPLE / "model_a.parquet", "a", calib=(0.6, 0.85), bootstrap=50)
    saved_run(cwd, SAMPLE / "model_b.parquet", "b", calib=(0.6, 0.85), eer=True, retrieval=True)
    run("report", ".opis/runs/a", ".opis/runs/b", "--out", "two.html", cwd=cwd, check_code=0)
    return cwd


def _classes_json(page: str, index: int = 0) -> dict:
    m = re.search(rf'<div class="classes" id="classes-{index}">.*?<script type="application/json">(.*?)</script>',
                  page, re.S)
    return json.loads(m.group(1))


def test_page_is_self_contained_complete_and_reproducible(runs):
    page = (runs / "two.html").read_text()
    # nothing fetched from elsewhere: every src and href is inline data or an anchor
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), refs[:5]
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    assert "<h2>Comparison</h2>" in page and "paired" in page and "MAP@R" in page
    assert page.count("<figure>") >= 5  # compare, pareto, a: curves + distributions, b: curves + distributions + det
    report_a = json.loads((runs / ".opis/runs/a/report.json").read_text())
    table = _classes_json(page, 1)
    assert [row[0] for row in table["rows"]] == [c["label"] for c in report_a["classes"]]
    assert f"{report_a['bootstrap']['opis']['interval'][0]:.4g}" in page  # the summary's interval
    # the default run is the last one (b); two commands give the same bytes, and the library call
    # the same page (figures aside: a long-lived process may measure text a hair differently)
    last = run("report", "--out", "last.html", cwd=runs, check_code=0)
    again = run("report", ".opis/runs/b", "--out", "again.html", cwd=runs, check_code=0)
    assert "wrote" in last.stderr and "wrote" in again.stderr and "<h2>b</h2>" in (runs / "last.html").read_text()
    assert (runs / "again.html").read_bytes() == (runs / "last.html").read_bytes()  # two processes, same bytes
    direct = opis_cli.write_report_page([opis_cli.load_run(runs / ".opis/runs/b")], runs / "direct.html")

    def without_figures(path):
        return re.sub(r'base64,[^"]+', "", path.read_text())

    assert without_figures(direct) == without_figures(runs / "last.html")


def test_user_mistakes_exit_2_and_write_nothing(runs):
    assert_user_error(run("report", "--out", "page.png", cwd=runs), "use a .html path")
    assert not (runs / "page.png").exists()
    assert_user_error(run("report", ".opis/runs/a", "--out", ".opis/runs/a/report.json", cwd=runs),
                      "report.json")
    assert_user_error(run("report", "missing-run", "--out", "x.html", cwd=runs), "missing-run")


def _base_run() -> SavedRun:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(20), 10)
    x = rng.normal(size=(20, 8))[y] + rng.normal(size=(200, 8))
    return SavedRun.from_report(opis_cli.evaluate(x, y, calib=(0.2, 1.0), thresholds=21, eer=True), "big")


def test_a_100k_class_run_stays_under_10_mb():
    # The class table is compact JSON (~75 bytes a class); figures of runs this large are PNG,
    # bounded by their pixels (checked below on a run past the SVG limit).
    run_ = _base_run()
    rng = np.random.default_rng(1)
    c = 100_000
    report = copy.deepcopy(run_.report)
    report["classes"] = [
        {"label": f"class-{i:06d}", "size": int(s), "positive_pairs": int(s * (s - 1) // 2), "negative_pairs": 10 ** 6,
         "mean_utility": float(m), "opis_contribution": float(rng.uniform(0, 1e-5)), "in_worst_eps": bool(m < 0.37),
         "queries": int(s), "recall_hits": {"1": int(s) - 1}, "eer": float(rng.uniform(0, 0.3)), "eer_threshold": 0.5}
        for i, (s, m) in enumerate(zip(rng.integers(2, 9, c), rng.uniform(0.3, 1.0, c)))]
    report["input"]["classes_used"] = c
    run_.report, run_.utility, run_.distributions, run_.rates = report, None, None, None
    page = report_page([run_])
    assert len(page.encode()) < 9_000_000
    assert len(_classes_json(page)["rows"]) == c

    wide = _base_run()
    n = SVG_MAX_CLASSES + 1
    wide.report = copy.deepcopy(wide.report)
    wide.report["classes"] = [dict(wide.report["classes"][i % 20], label=f"c{i}") for i in range(n)]
    wide.labels = [f"c{i}" for i in range(n)]
    wide.utility = np.tile(wide.utility, (n // 20 + 1, 1))[:n]
    wide.distributions, wide.rates = None, None
    figure = re.search(r'src="data:(image/[a-z+]+);base64,([^"]+)"', report_page([wide]))
    assert figure.group(1) == "image/png" and len(figure.group(2)) < 1_000_000


def _chromium(tmp_path, url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", *args, url],
                          capture_output=True, text=True, timeout=120)


def _rows(dom: str, index: int) -> list[str]:
    body = re.search(rf'<div class="classes" id="classes-{index}">.*?<tbody>(.*?)</tbody>', dom, re.S).group(1)
    return re.findall(r"<tr[^>]*><td>(.*?)</td>", body)


@needs_browser
def test_the_page_renders_in_a_browser(runs, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    _chromium(tmp_path, (runs / "two.html").as_uri(), f"--screenshot={shot}", "--window-size=1200,1600",
              "--hide-scrollbars")
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1600, 1200)
    # not blank: many colours (text, plot lines, shading) and much that is not background
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200
    assert (pixels.min(axis=2) < 200).mean() > 0.02


@needs_browser
def test_sorting_and_filtering_in_a_browser(runs, tmp_path):
    page = runs / "two.html"  # b's table (the second run's) carries EER and MAP@R
    report_b = json.loads((runs / ".opis/runs/b/report.json").read_text())
    # the table sorts the values it shows (4 significant digits), label order on ties
    by_utility = sorted(report_b["classes"], key=lambda c: (float(f"{c['mean_utility']:.4g}"), c["label"]))
    # one click on the header: lowest mean utility first (label order on ties)
    dom = _chromium(tmp_path, page.as_uri() + "#table=1&click=mean_utility", "--dump-dom").stdout
    assert 'data-ready="1"' in dom and 'aria-sort="ascending"' in dom
    assert _rows(dom, 1) == [c["label"] for c in by_utility]
    # a second click: highest first; another column, and the filter on top of a sort
    dom = _chromium(tmp_path, page.as_uri() + "#table=1&click=mean_utility,mean_utility", "--dump-dom").stdout
    assert _rows(dom, 1)[0] == by_utility[-1]["label"] and 'aria-sort="descending"' in dom
    by_eer = sorted(report_b["classes"], key=lambda c: (-float(f"{c['eer']:.4g}"), c["label"]))
    dom = _chromium(tmp_path, page.as_uri() + "#table=1&click=eer,eer&filter=sp-01", "--dump-dom").stdout
    assert _rows(dom, 1) == [c["label"] for c in by_eer if "sp-01" in c["label"]]


@needs_browser
def test_labels_are_shown_as_text_never_as_markup(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.array(["<img src=x onerror=alert(1)>", "</script><b>bold</b>", "plain"])[np.repeat([0, 1, 2], 8)]
    x = rng.normal(size=(3, 6))[np.repeat([0, 1, 2], 8)] + rng.normal(size=(24, 6))
    out = tmp_path / "labels.html"
    opis_cli.write_report_page([SavedRun.from_report(opis_cli.evaluate(x, labels, calib=(0.2, 1.2)), "l")], out)
    dom = _chromium(tmp_path, out.as_uri(), "--dump-dom").stdout
    assert 'data-ready="1"' in dom  # the script ran: the label did not end it
    assert "<b>bold</b>" not in dom and "<img src=\"x\"" not in dom
    assert "&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in dom
