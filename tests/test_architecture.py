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
    "cli": {"core", "data", "engine", "statistics", "analyses", "report", "pipeline", "verdicts"},
}
MAX_MODULE_LINES = 450
MAX_CLI_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in LOWER):
        return parts[1]
    return "core" if parts[-1] not in ("__main__",) else "cli"


def _imports(module: str, path: Path) -> set[str]:
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
    modules = _modules()
    return {name for name in found if name in modules and name != module}


def _graph() -> dict[str, set[str]]:
    return {name: _imports(name, path) for name, path in _modules().items()}


def test_layers_import_only_downwards():
    bad = []
    for module, deps in _graph().items():
        layer = _layer(module)
        for dep in deps:
            if dep == "opis_cli":
                continue  # __version__
            other = _layer(dep)
            if other != layer and other not in LOWER[layer]:
                bad.append(f"{module} ({layer}) imports {dep} ({other})")
    assert not bad, "\n".join(bad)


def test_the_engine_imports_no_statistics_analyses_report_or_cli():
    for module, deps in _graph().items():
        if _layer(module) == "engine":
            assert not {_layer(d) for d in deps} & {"statistics", "analyses", "report", "pipeline", "cli"}, module


def test_nothing_imports_the_cli():
    for module, deps in _graph().items():
        if _layer(module) != "cli":
            assert not [d for d in deps if _layer(d) == "cli"], module


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep == "opis_cli" or dep not in graph:
                continue
            if state.get(dep) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(dep):] + [dep]))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_rich_typer_and_matplotlib_stay_in_the_leaves():
    for module, path in _modules().items():
        text = path.read_text()
        layer = _layer(module)
        if layer != "cli":
            for banned in ("import rich", "from rich", "import typer", "from typer"):
                assert banned not in text, f"{module} imports {banned}"
        if module != "opis_cli.report.plot" and layer != "cli":
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


def test_the_rule_sees_a_violation():
    # The checks above must be able to fail: a made-up engine module importing the report is caught.
    assert _layer("opis_cli.engine.pairs") == "engine" and _layer("opis_cli.report.report") == "report"
    assert "report" not in LOWER["engine"]
    assert _layer("opis_cli.errors") == "core" and _layer("opis_cli.__main__") == "cli"
