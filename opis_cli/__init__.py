"""opis-cli: threshold-consistency evaluation of embedding models.

Library entry points (everything the CLI does)::

    import opis_cli
    report = opis_cli.evaluate(embeddings, labels, calib=(0.2, 0.6))
    report = opis_cli.evaluate_file("embeddings.parquet")
    outcome = opis_cli.run_evaluate(opis_cli.EvaluateRequest("e.parquet", baseline="base"))  # all opis evaluate does
    report.opis, report.eps_opis, report.recall_at_k[1], report.to_json()
    advice = opis_cli.recommend_margins(embeddings, labels)   # TCM margins, typed (MarginAdvice)
    report = opis_cli.margins_file("embeddings.parquet")       # opis margins: report.margins
    view = opis_cli.thresholds_file("e.parquet", target_far=1e-3)   # opis thresholds: OperatingPoints
    report = opis_cli.bootstrap_report(report, 1000)           # opis evaluate --bootstrap: a new Report
    result = opis_cli.run_gate(opis_cli.load_run("new"), opis_cli.load_run("base"), opis_cli.GateOptions(...))
    opis_cli.compare_runs([opis_cli.load_run(a), opis_cli.load_run(b)])   # opis compare
    opis_cli.plot_runs([opis_cli.load_run(a)], "curves.png")             # opis plot
    opis_cli.write_report_page([opis_cli.load_run(a)], "report.html")    # opis report

Heavy modules are imported on first use, so ``import opis_cli`` (and ``opis --help``) stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["evaluate", "evaluate_file", "run_evaluate", "EvaluateRequest", "evaluate_dataset", "margins_file", "recommend_margins", "MarginAdvice",
           "thresholds_file", "bootstrap_report", "run_gate", "GateOptions", "compare_runs", "plot_runs",
           "write_report_page", "load_dataset", "load_run", "save_run", "EvalConfig", "Report", "OpisError", "__version__"]

_LAZY = {
    "evaluate": "pipeline.evaluation",
    "evaluate_file": "pipeline.evaluation",
    "evaluate_dataset": "pipeline.evaluation",
    "run_evaluate": "pipeline.evaluate_command",
    "EvaluateRequest": "pipeline.evaluate_command",
    "margins_file": "pipeline.margins",
    "recommend_margins": "pipeline.margin_advice",
    "thresholds_file": "pipeline.thresholds",
    "bootstrap_report": "statistics.bootstrap",
    "run_gate": "verdicts.gate",
    "GateOptions": "verdicts.gate",
    "compare_runs": "verdicts.compare",
    "plot_runs": "report.plot",
    "write_report_page": "pages.html_report",
    "load_run": "report.runs",
    "MarginAdvice": "pipeline.margin_advice",
    "load_dataset": "data.io",
    "save_run": "report.runs",
    "EvalConfig": "config",
    "Report": "report.report",
    "OpisError": "errors",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
