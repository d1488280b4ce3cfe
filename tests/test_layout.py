"""The package layout: imports go one way (cli -> experiments -> library) and form no circle."""

import ast
from pathlib import Path

import stv

ROOT = Path(stv.__file__).parent


def _module(path: Path) -> tuple[str, str]:
    """(module name, the package its relative imports start from)."""
    parts = ["stv", *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def import_graph() -> dict[str, set[str]]:
    """Every stv module -> the stv modules it imports at run time (TYPE_CHECKING blocks left out)."""
    modules = {_module(p)[0]: p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = _module(path)[1]
        tree = ast.parse(path.read_text())
        typing_only = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - max(node.level - 1, 0)] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
                subs = {f"{target}.{a.name}" for a in node.names} & modules.keys()
                targets |= subs or ({target} & modules.keys())
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names} & modules.keys()
        graph[name] = targets - {name}
    return graph


def test_the_library_imports_neither_the_harness_nor_the_command_line():
    graph = import_graph()
    assert len(graph) > 50  # the walk found the package
    harness = ("stv.experiments", "stv.cli")
    library = [m for m in graph if not m.startswith(harness) and m != "stv.__main__"]
    wrong = {m: sorted(t for t in graph[m] if t.startswith(harness)) for m in library}
    assert {m: t for m, t in wrong.items() if t} == {}
    upward = {
        m: sorted(t for t in graph[m] if t.startswith("stv.cli")) for m in graph if m.startswith("stv.experiments")
    }
    assert {m: t for m, t in upward.items() if t} == {}


def test_no_import_circle():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path + [module, target]
            if target not in state:
                found = visit(target, path + [module])
                if found:
                    return found
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            assert visit(module, []) is None
