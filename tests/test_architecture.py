"""Data flows one way: training (bsstudy.run and everything it imports, and every probe) never imports the
analysis side (bsstudy.report). Checked statically over every import statement, function-level ones too,
so an import that only runs on some path (e.g. with logger=wandb) is caught as well."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bsstudy"
ANALYSIS = "bsstudy.report"


def module_file(name: str) -> Path | None:
    path = PACKAGE.parent.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imported_modules(name: str) -> set[str]:
    """bsstudy modules named by any import statement of module `name`."""
    path = module_file(name)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from pkg import module`
    return {m for m in found if m.startswith("bsstudy") and module_file(m)}


def reachable(start: str) -> dict[str, str]:
    """Every bsstudy module reachable from `start` by imports, with the module that first imported it."""
    seen, todo = {start: ""}, [start]
    while todo:
        current = todo.pop()
        for name in imported_modules(current) - seen.keys():
            seen[name] = current
            todo.append(name)
    return seen


TRAINING = ["bsstudy.run", *sorted(f"bsstudy.probes.{p.stem}" for p in (PACKAGE / "probes").glob("[a-z]*.py"))]


@pytest.mark.parametrize("start", TRAINING)
def test_training_never_imports_the_analysis_side(start):
    edges = {m: by for m, by in reachable(start).items() if m.startswith(ANALYSIS)}
    assert edges == {}, f"{start} reaches the report through: {edges}"


def test_the_check_finds_an_edge_where_there_is_one():
    assert "bsstudy.report.runs" in reachable("bsstudy.report.build")
