"""The package's layout is its data flow, enforced: layers import only downwards, nothing imports
the CLI, no import circle, small modules and small CLI functions (docs/architecture.md).

Read from the source with ast (every import counts, also one inside a function), so the rule
holds for the lazy imports that keep ``opis --help`` fast too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "opis_cli"

# Each layer and the layers it may import. The root modules (errors, config, memory, threads) are
# "core": every layer may use them, they use nothing of the package.
LOWER = {
    "core": set(),
    "data": {"core"},
    "engine": {"core", "data"},
    "statistics": {"core", "data", "engine"},
    "analyses": {"core", "data", "engine", "statistics"},
    "report": {"core", "data", "engine", "statistics", "analyses"},
    "pipeline": {"core", "data", "engine", "statistics", "analyses", "report"},
    "verdicts": {"core", "data", "statistics", "report"},
    "pages": {"core", "data", "statistics", "analyses", "report", "verdicts"},
    "cli": {"core", "data", "engine", "statistics", "analyses", "report", "pipeline", "verdicts", "pages"},
}
MAX_MODULE_LINES = 450
MAX_CLI_FUNCTION_LINES = 80


def _modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for path in sorted((root / "opis_cli").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in LOWER):
        return parts[1]
    return "core" if parts[-1] not in ("__main__",) else "cli"


def _imports(module: str, path: Path, modules: dict[str, Path] | None = None) -> set[str]:
    """Package modules ``module`` imports (resolved to the longest existing module name)."""
    tree = ast.parse(path.read_text())
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("opis_cli"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("opis_cli"):
                continue
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
    modules = modules if modules is not None else _modules()
    return {name for name in found if name in modules and name != module}


def _graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = _modules(root)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, deps in graph.items():
        layer = _layer(module)
        for dep in deps:
            if dep == "opis_cli":
                continue  # __version__
            other = _layer(dep)
            if other != layer and other not in LOWER[layer]:
                bad.append(f"{module} ({layer}) imports {dep} ({other})")
    return bad


def test_layers_import_only_downwards():
    bad = _layer_violations(_graph())
    assert not bad, "\n".join(bad)


def test_the_engine_imports_no_statistics_analyses_report_or_cli():
    for module, deps in _graph().items():
        if _layer(module) == "engine":
            assert not {_layer(d) for d in deps} & {"statistics", "analyses", "report", "pipeline", "cli"}, module


def test_nothing_imports_the_cli():
    for module, deps in _graph().items():
        if _layer(module) != "cli":
            assert not [d for d in deps if _layer(d) == "cli"], module


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (module -> imported modules), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep == "opis_cli" or dep not in graph:
                continue
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle():
    circle = _circle(_graph())
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_rich_typer_and_matplotlib_stay_in_the_leaves():
    for module, path in _modules().items():
        text = path.read_text()
        layer = _layer(module)
        if layer != "cli":
            for banned in ("import rich", "from rich", "import typer", "from typer"):
                assert banned not in text, f"{module} imports {banned}"
        if not module.startswith("opis_cli.report.plot") and layer != "cli":
            assert "import matplotlib" not in text and "from matplotlib" not in text, module


def test_no_module_over_the_line_limit():
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_cli_function_over_the_line_limit():
    long = {}
    for module, path in _modules().items():
        if _layer(module) != "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_CLI_FUNCTION_LINES:
                    long[f"{module}.{node.name}"] = n
    assert not long, f"CLI functions over {MAX_CLI_FUNCTION_LINES} lines: {long}"


def test_the_rule_sees_a_violation(tmp_path):
    # The checks must be able to fail: a made-up package whose engine imports the report, lazily
    # inside a function, and whose report imports the engine back, is caught on both counts.
    pkg = tmp_path / "opis_cli"
    for sub in ("engine", "report"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "engine" / "sweep.py").write_text("def f():\n    from opis_cli.report.report import Report\n")
    (pkg / "report" / "report.py").write_text("from ..engine import sweep\nclass Report: pass\n")
    graph = _graph(tmp_path)
    assert graph["opis_cli.engine.sweep"] == {"opis_cli.report.report"}
    assert graph["opis_cli.report.report"] == {"opis_cli.engine", "opis_cli.engine.sweep"}
    assert _layer_violations(graph) == ["opis_cli.engine.sweep (engine) imports opis_cli.report.report (report)"]
    assert _circle(graph) == ["opis_cli.engine.sweep", "opis_cli.report.report", "opis_cli.engine.sweep"]
