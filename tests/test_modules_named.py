"""Every module of archomata is named in README.md or docs/architecture.md, so a newcomer
finds each one from the documents; and the module map of docs/architecture.md ("Where
things are") names no module that is gone.

The rule: a module counts as named when either document holds, as a whole word,
- its dotted name (`archomata.identity.mfa.throttle`), or
- its whole path under `archomata/` (`identity/mfa/throttle.py`; a bare `errors.py` is
  the top-level module, not `http/middlewares/errors.py`), or
- that path cut from the front (`mfa/throttle.py`, down to the file name alone:
  `breached.py`), when no other module's path ends the same way.
A package (its `__init__.py`) counts as named by its folder, in the same ways
(`identity/mfa/`, `mfa/`, `archomata.identity.mfa`). So `routes.py`, which several
packages have, is named only with its folder (`access/routes.py`).
"""

from __future__ import annotations

import re
from pathlib import Path

import archomata

ROOT = Path(archomata.__file__).parent
DOCS = (ROOT.parent / "README.md", ROOT.parent / "docs" / "architecture.md")
MAP_HEADING = "## Where things are"


def _paths() -> list[str]:
    """Every module as its path under archomata/, a package as its folder (`mfa/`)."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "__init__.py":
            continue  # archomata itself
        found.append(rel.removesuffix("__init__.py"))
    return found


def _mentioned(text: str, name: str, *, whole: bool = False) -> bool:
    """`name` in `text`, not as the tail of a longer name (nor of a longer path, when it
    is a `whole` path: then only after `archomata/`); a file name not as the head of one
    either (a folder's name goes on into what is in it: `mfa/throttle.py` holds `mfa/`)."""
    before = r"(?:(?<![\w./-])|(?<=archomata/))" if whole else r"(?<![\w.-])"
    after = "" if name.endswith("/") else r"(?![\w-])"
    return re.search(rf"{before}{re.escape(name)}{after}", text) is not None


def _dotted(rel: str) -> str:
    return "archomata." + rel.removesuffix("/").removesuffix(".py").replace("/", ".")


def _named(rel: str, paths: list[str], text: str) -> bool:
    # The dotted name, alone or going on into a name inside it (`...json_io.parse_json`).
    if re.search(rf"(?<![\w.]){re.escape(_dotted(rel))}(?!\w)", text):
        return True
    if _mentioned(text, rel, whole=True):
        return True
    parts = rel.removesuffix("/").split("/")
    tail = "/" if rel.endswith("/") else ""
    for start in range(1, len(parts)):  # cut from the front, down to the bare name
        suffix = "/".join(parts[start:]) + tail
        same = [path for path in paths if path == suffix or path.endswith("/" + suffix)]
        if len(same) == 1 and _mentioned(text, suffix):
            return True
    return False


def test_every_module_is_named_in_the_readme_or_the_architecture() -> None:
    text = "\n".join(doc.read_text() for doc in DOCS)
    paths = _paths()
    missing = [rel for rel in paths if not _named(rel, paths, text)]
    assert not missing, (
        "modules named in neither README.md nor docs/architecture.md (add each to the "
        f"README's layout or to {MAP_HEADING!r}): {missing}")


def test_the_module_map_names_only_modules_that_exist() -> None:
    architecture = DOCS[1].read_text()
    assert MAP_HEADING in architecture
    section = architecture.split(MAP_HEADING, 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"^\| `([\w/]+(?:\.py|/))` \|", section, re.MULTILINE)
    assert len(named) > 10, "the map's rows read as | `path` | what it holds |"
    gone = [rel for rel in named if rel not in _paths()]
    assert not gone, f"{MAP_HEADING!r} names modules that do not exist: {gone}"


class TestTheRule:
    """What counts as named, or the test above proves nothing."""

    PATHS = ["identity/mfa/", "identity/mfa/throttle.py", "identity/mfa/service.py",
             "identity/service.py", "identity/breached.py", "access/routes.py",
             "bridge/routes.py", "web/json_io.py", "identity/routes/", "orgs/routes/"]

    def named(self, rel: str, text: str) -> bool:
        return _named(rel, self.PATHS, text)

    def test_a_path_cut_down_to_its_folder_counts_when_it_is_unique(self) -> None:
        assert self.named("identity/mfa/throttle.py", "see `mfa/throttle.py`")
        assert self.named("identity/mfa/service.py", "`archomata/identity/mfa/service.py`")
        assert not self.named("identity/mfa/service.py", "`service.py`")
        assert not self.named("identity/service.py", "`mfa/service.py`")

    def test_a_bare_file_name_counts_only_when_no_other_module_has_it(self) -> None:
        assert self.named("identity/breached.py", "`breached.py`")
        assert not self.named("access/routes.py", "`routes.py`")
        assert self.named("access/routes.py", "access/routes.py")
        assert not self.named("identity/breached.py", "`notbreached.py`")

    def test_a_whole_path_counts_unless_it_is_the_tail_of_a_longer_one(self) -> None:
        paths = ["errors.py", "http/middlewares/errors.py"]
        assert _named("errors.py", paths, "`errors.py` (the error tree)")
        assert _named("errors.py", paths, "`archomata/errors.py`")
        assert not _named("errors.py", paths, "`http/middlewares/errors.py`")
        assert not _named("http/middlewares/errors.py", paths, "`errors.py`")

    def test_a_dotted_name_counts_also_through_a_name_inside_it(self) -> None:
        assert self.named("identity/mfa/throttle.py", "archomata.identity.mfa.throttle")
        assert self.named("web/json_io.py", "`archomata.web.json_io.parse_json`")
        assert not self.named("identity/mfa/throttle.py", "archomata.identity.mfa")

    def test_a_package_is_named_by_its_folder(self) -> None:
        assert self.named("identity/mfa/", "`archomata/identity/mfa/`")
        assert self.named("identity/mfa/", "the `mfa/` folder")
        assert not self.named("identity/routes/", "`routes/`")
        assert self.named("identity/routes/", "`identity/routes/`")
