"""No import circles in webdancer/ and plugins/: module-level imports, `TYPE_CHECKING` blocks included (a circle
that only type checkers follow still ties two modules into one). Imports inside functions are left out: they run
when called, and are how a module reaches a heavy optional dependency."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def our_modules() -> dict[str, Path]:
    """Dotted module name -> file, for webdancer/ and every first-party plugin package."""
    modules = {}
    for base in (ROOT, ROOT / "plugins"):
        for path in base.glob("webdancer*/**/*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def module_level_imports(tree: ast.Module) -> list[ast.stmt]:
    """Import statements that run when the module is imported, or that a type checker reads: the module's body and
    the bodies of its top-level if/try/with blocks (TYPE_CHECKING among them), not functions or classes."""
    found, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            todo += node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", [])
            for handler in getattr(node, "handlers", []):
                todo += handler.body
    return found


def edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in module_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from package import submodule` imports the submodule; `from module import name` the module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_finds_a_circle_through_a_type_checking_block(tmp_path):
    a = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n")
    assert [type(n).__name__ for n in module_level_imports(a)] == ["ImportFrom", "ImportFrom"]
    assert cycles({"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.a"}}) == [["pkg.a", "pkg.b"]]
    lazy = ast.parse("def f():\n    from pkg.b import B\n")
    assert module_level_imports(lazy) == []


def test_no_import_circles_in_webdancer_and_plugins():
    modules = our_modules()
    assert {"webdancer.tools", "webdancer.toolstore", "webdancer_web.corpus", "webdancer_rl.trl_engine"} <= set(modules)
    graph = edges(modules)
    assert "webdancer.toolstore" in graph["webdancer.tools"]  # the walk sees real imports
    found = cycles(graph)
    assert not found, "import circles (module level, TYPE_CHECKING included):\n" + "\n".join(" <-> ".join(c) for c in found)
