"""The package's modules import each other without a cycle, counting the imports a type
checker follows too (`if TYPE_CHECKING:` blocks): a cycle there is a cycle of the design,
whatever Python tolerates at run time. Imports inside functions are not counted."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import archomata

ROOT = Path(archomata.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    out: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                out.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    base = name.split(".")
                    base = base[: len(base) - node.level + int(is_package)]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                out.add(module)
                out.update(f"{module}.{alias.name}" for alias in node.names)

    visit(tree.body)
    return out


def test_no_import_cycle() -> None:
    modules = _modules()
    graph = {
        name: {m for m in _imports(ast.parse(path.read_text()), name,
                                   path.name == "__init__.py")
               if m in modules and m != name}
        for name, path in modules.items()
    }
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
