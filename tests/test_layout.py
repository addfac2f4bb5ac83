"""The shape of edge/: modules import downward only (no cycle, even through imports inside
functions), and each reads in one sitting."""

import ast
from pathlib import Path

EDGE = Path(__file__).resolve().parents[1] / "edge"


def module_name(path: Path) -> str:
    parts = path.relative_to(EDGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The edge modules `path` imports, at its top or inside any function."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("edge")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("edge"):
                target = node.module
            else:
                continue
            # `from . import media` names a module; `from .media import x` names a name in one
            found |= {f"{target}.{alias.name}" for alias in node.names} | {target}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in EDGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        # a package's own __init__ is what importing it runs, not an import of its own
        edges[name] = {m for m in imports_of(path) if m in modules and m != name and not name.startswith(m + ".")}
    return edges


def test_no_module_of_edge_imports_itself_back():
    edges, state, cycles = graph(), {}, []

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == [], " ; ".join(" -> ".join(c) for c in cycles)


def test_the_run_package_never_imports_the_cluster():
    edges = graph()
    assert not [(a, b) for a, bs in edges.items() for b in bs if a.startswith("edge.run") and b.startswith("edge.cluster")]


def test_each_module_and_function_reads_in_one_sitting():
    """About 400 lines a file and 60 a function at most (a little slack for a docstring grown)."""
    long_files, long_functions = [], []
    for path in sorted(EDGE.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 420:
            long_files.append(f"{module_name(path)} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long_functions.append(f"{module_name(path)}.{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long_files == [] and long_functions == []
