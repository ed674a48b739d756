"""The import rules of the package's rooms (README: How the code is organised), read from the source."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Shared one-file modules at the top of clipfit/ (fileio, checkpoint_files, ...): any room but methods
SHARED = {p.stem for p in (ROOT / "clipfit").glob("*.py") if p.stem != "__init__"} | {"REPO_ROOT"}
# room -> the clipfit rooms (and the repository's trainers/, datasets/) it may import, besides itself
ALLOWED: Dict[str, Set[str]] = {
    # the methods on a plain CLIP (and the toy CLIP's file): no Dassl, no trainer, no engine; of the
    # shared modules only errors (the UserError classes; standard library only, checked below)
    "clipfit/methods": {"toyworld", "errors"},
    "clipfit/engine": SHARED,  # the Dassl bridge knows nothing of CLIP or of our trainers
    "clipfit/training": {"methods", "engine", "experiments"} | SHARED,  # cli: a finished run's result
    "clipfit/data": {"engine", "training", "datasets"} | SHARED,  # the doctor loads datasets/
    "clipfit/experiments": {"training", "data", "engine", "methods"} | SHARED,  # run folders, sweep input checks
    "clipfit/analysis": {"methods", "training", "engine"} | SHARED,
    "clipfit/testing": {"methods"} | SHARED,
    "trainers": {"methods", "training", "engine"} | SHARED,
    "datasets": {"data", "engine", "toyworld"} | SHARED,
}


def _imports(path: Path) -> Iterator[Tuple[str, int]]:
    """Every absolute module name ``path`` imports (``from clipfit import x`` gives ``clipfit.x``)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "clipfit":
                yield from ((f"clipfit.{a.name}", node.lineno) for a in node.names)
            else:
                yield node.module, node.lineno


def _sources():
    for folder in ("clipfit", "trainers", "datasets"):
        yield from sorted((ROOT / folder).rglob("*.py"))


def _room(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return "/".join(rel[:2]) if rel[0] == "clipfit" and len(rel) > 2 else rel[0]


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_each_room_imports_only_what_its_rule_allows(room):
    own = room.split("/")[-1]
    broken = []
    for path in _sources():
        if _room(path) != room:
            continue
        for module, line in _imports(path):
            parts = module.split(".")
            if parts[0] == "clipfit" and len(parts) > 1 and parts[1] not in ALLOWED[room] | {own}:
                broken.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            elif parts[0] in ("trainers", "datasets") and parts[0] not in ALLOWED[room] | {own}:
                broken.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not broken, "\n".join(broken)


def test_dassl_only_in_the_engine_bridge_and_clip_only_in_openai_clip():
    owners = {"dassl": {"clipfit/engine/__init__.py"}, "clip": {"clipfit/methods/openai_clip.py"},
              "open_clip": {"clipfit/methods/open_clip_lib.py"}}
    for path in _sources():
        rel = str(path.relative_to(ROOT))
        for module, line in _imports(path):
            top = module.split(".")[0]
            assert top not in owners or rel in owners[top], f"{rel}:{line} imports {module}"


def test_errors_module_imports_only_the_standard_library():
    """Every room may import clipfit/errors.py, methods included: it must stay a leaf."""
    path = ROOT / "clipfit" / "errors.py"
    imported = {module.split(".")[0] for module, _ in _imports(path)}
    assert imported <= {"__future__", "importlib", "typing"}, imported
