"""opis-cli: threshold-consistency evaluation of embedding models.

Library entry points (everything the CLI does)::

    import opis_cli
    report = opis_cli.evaluate(embeddings, labels, calib=(0.2, 0.6))
    report = opis_cli.evaluate_file("embeddings.parquet")
    report.opis, report.eps_opis, report.recall_at_k[1], report.to_json()
    advice = opis_cli.recommend_margins(embeddings, labels)   # TCM margins, typed (MarginAdvice)

Heavy modules are imported on first use, so ``import opis_cli`` (and ``opis --help``) stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["evaluate", "evaluate_file", "evaluate_dataset", "recommend_margins", "MarginAdvice", "load_dataset",
           "save_run", "EvalConfig", "Report", "OpisError", "__version__"]

_LAZY = {
    "evaluate": "pipeline.evaluation",
    "evaluate_file": "pipeline.evaluation",
    "evaluate_dataset": "pipeline.evaluation",
    "recommend_margins": "pipeline.margin_advice",
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
