"""Every dependency between the packages of archomata runs one way, down the floors drawn
in docs/architecture.md (the line starting `floors:`, read here, so the doc and the code
cannot drift apart).

A package is a first-level folder of archomata (identity, access, orgs, ...); the
top-level modules form `core`, except the composition roots (`app.py`, `__main__.py` and
`keys.py`, the typed AppKeys), which may import anything and are left out. Every import
counts: at module level or inside a function (a lazy import is still a dependency), in
an `if TYPE_CHECKING:` block too. These are the rules of the lead's
`package_layers.py`, computed here, so that a clone of the repository alone (as CI has)
holds itself to them.
"""

from __future__ import annotations

import ast
import graphlib
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import archomata

ROOT = Path(archomata.__file__).parent
ARCHITECTURE = ROOT.parent / "docs" / "architecture.md"
COMPOSITION_ROOTS = frozenset({"app", "__main__", "keys"})
CORE = "core"
TOP = "app"  # the floor of the composition roots

# Temporary, named allowances, emptied when the branches removing them merge (issue 24).
# Each is (lower, upper): the import of `upper` by `lower` is still there, the other
# direction is the one the floors keep. A pair listed here that no longer exists fails,
# so that the allowance cannot outlive it.
KNOWN_PAIRS_BEING_REMOVED: frozenset[tuple[str, str]] = frozenset()
# Floors drawn for a package another branch introduces (the org and membership rows
# below access and identity); listed here while it is absent, failing once it exists.
PACKAGES_STILL_TO_COME: frozenset[str] = frozenset()

Edges = dict[tuple[str, str], list[str]]


def package_of(module: tuple[str, ...]) -> str | None:
    """The package of a module named by its parts below `archomata` (() is the package
    itself): its first folder, `core` for a top-level module, None for a composition
    root."""
    if not module:
        return CORE
    if (ROOT / module[0]).is_dir():
        return module[0]
    return None if module[0] in COMPOSITION_ROOTS else CORE


def imports(source: str, module: tuple[str, ...], is_package: bool
            ) -> Iterator[tuple[tuple[str, ...], int]]:
    """Every archomata module or name `source` imports, as parts below `archomata`, with
    its line: lazy imports and TYPE_CHECKING ones included (ast.walk sees every node)."""
    here = module if is_package else module[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = tuple(alias.name.split("."))
                if name[0] == "archomata":
                    yield name[1:], node.lineno
        elif isinstance(node, ast.ImportFrom):
            # `from .x` is here, `from ..x` one up; absolute names start from nothing.
            up = ("archomata", *here[: len(here) - node.level + 1]) if node.level else ()
            target = (*up, *(node.module.split(".") if node.module else ()))
            if target and target[0] == "archomata":
                for alias in node.names:
                    yield (*target[1:], alias.name), node.lineno


def package_edges() -> Edges:
    """(importer, imported) package pairs, each with the imports that make it."""
    edges: Edges = defaultdict(list)
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        module = parts[:-1] if is_package else parts
        source = package_of(module)
        if source is None:
            continue
        for target, line in imports(path.read_text(), module, is_package):
            imported = package_of(target)
            if imported is not None and imported != source:
                edges[(source, imported)].append(
                    f"{path.relative_to(ROOT.parent)}:{line} -> archomata.{'.'.join(target)}")
    return edges


def floors() -> list[str]:
    lines = re.findall(r"^\s*floors:(.*)$", ARCHITECTURE.read_text(), re.MULTILINE)
    assert len(lines) == 1, "docs/architecture.md must hold one line starting `floors:`"
    return [name.strip() for name in lines[0].split("<")]


def packages() -> set[str]:
    return {CORE} | {path.parent.name for path in ROOT.glob("*/__init__.py")}


def _kept(edges: Edges) -> Edges:
    """The edges but the upward ones of the pairs being removed."""
    return {edge: where for edge, where in edges.items()
            if edge not in KNOWN_PAIRS_BEING_REMOVED}


def _example(edges: Edges, edge: tuple[str, str]) -> str:
    return f"{edge[0]} -> {edge[1]} ({len(edges[edge])}, e.g. {edges[edge][0]})"


class TestOneDirection:
    def test_no_two_packages_import_each_other(self) -> None:
        edges = _kept(package_edges())
        pairs = sorted({tuple(sorted(edge)) for edge in edges if edge[::-1] in edges})
        assert not pairs, "two-way package pairs:\n" + "\n".join(
            f"{_example(edges, (a, b))} | {_example(edges, (b, a))}" for a, b in pairs)

    def test_the_pairs_being_removed_are_still_there(self) -> None:
        """Once a branch removes one, its allowance goes with it."""
        edges = package_edges()
        gone = sorted(pair for pair in KNOWN_PAIRS_BEING_REMOVED
                      if pair not in edges or pair[::-1] not in edges)
        assert not gone, f"no longer two-way: take {gone} out of KNOWN_PAIRS_BEING_REMOVED"

    def test_no_cycle_among_packages(self) -> None:
        graph: dict[str, set[str]] = defaultdict(set)
        for importer, imported in _kept(package_edges()):
            graph[importer].add(imported)
        try:
            graphlib.TopologicalSorter(graph).prepare()
        except graphlib.CycleError as exc:
            raise AssertionError(f"package cycle: {' -> '.join(exc.args[1])}") from None

    def test_web_and_core_import_no_domain_package(self) -> None:
        edges = package_edges()
        wrong = sorted(edge for edge in edges
                       if (edge[0] == CORE) or (edge[0] == "web" and edge[1] != CORE))
        assert not wrong, "\n".join(_example(edges, edge) for edge in wrong)


class TestFloors:
    def test_every_package_is_on_a_floor_and_every_floor_is_a_package(self) -> None:
        drawn = floors()
        assert drawn[0] == CORE and drawn[-1] == TOP, drawn
        assert len(set(drawn)) == len(drawn), f"a package on two floors: {drawn}"
        found = packages()
        assert not found - set(drawn), f"on no floor: {sorted(found - set(drawn))}"
        absent = set(drawn) - found - {TOP}
        assert absent <= PACKAGES_STILL_TO_COME, f"floors naming no package: {sorted(absent)}"
        arrived = PACKAGES_STILL_TO_COME & found
        assert not arrived, f"{sorted(arrived)} exist now: empty PACKAGES_STILL_TO_COME"

    def test_each_package_imports_only_lower_floors(self) -> None:
        floor = {name: level for level, name in enumerate(floors())}
        edges = _kept(package_edges())
        climbing = sorted(edge for edge in edges
                          if floor.get(edge[1], -1) >= floor.get(edge[0], -1))
        assert not climbing, "imports that do not go down the floors:\n" + "\n".join(
            _example(edges, edge) for edge in climbing)


class TestTheReader:
    """The reader itself: what it must count, or the tests above prove nothing."""

    SOURCE = """
from __future__ import annotations
from typing import TYPE_CHECKING
import archomata.web.json_io
from archomata import audit, keys
from archomata.errors import NotFound
from ..trading.store import orders
from . import store
if TYPE_CHECKING:
    from archomata.identity.tokens import Claims
def later() -> None:
    from archomata.ops import health
"""

    def test_every_kind_of_import_counts(self) -> None:
        found = {package_of(target)
                 for target, _ in imports(self.SOURCE, ("bridge", "service"), False)}
        assert found == {"web", "audit", None, CORE, "trading", "bridge", "identity", "ops"}

    def test_a_relative_import_in_a_package_init_starts_from_the_package(self) -> None:
        found = [target for target, _ in imports("from .store import get\n",
                                                 ("identity", "mfa"), True)]
        assert found == [("identity", "mfa", "store", "get")]

    def test_the_composition_roots_are_left_out(self) -> None:
        assert package_of(("app",)) is None and package_of(("keys",)) is None
        assert package_of(("config",)) == CORE and package_of(()) == CORE
        roots = ("archomata/app.py:", "archomata/keys.py:", "archomata/__main__.py:")
        assert not any(where.startswith(roots)
                       for found in package_edges().values() for where in found)
