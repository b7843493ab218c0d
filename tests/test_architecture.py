"""Data flows one way: training (bsstudy.train.run and everything it imports, and every probe) never imports the
analysis side (bsstudy.analysis.report). Checked statically over every import statement, function-level ones too,
so an import that only runs on some path (e.g. with logger=wandb) is caught as well."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bsstudy"
ANALYSIS = "bsstudy.analysis"


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


TRAINING = ["bsstudy.train.run", *sorted(f"bsstudy.probes.{p.stem}" for p in (PACKAGE / "probes").glob("[a-z]*.py"))]


@pytest.mark.parametrize("start", TRAINING)
def test_training_never_imports_the_analysis_side(start):
    edges = {m: by for m, by in reachable(start).items() if m.startswith(ANALYSIS)}
    assert edges == {}, f"{start} reaches the report through: {edges}"


def test_the_check_finds_an_edge_where_there_is_one():
    assert "bsstudy.analysis.report.runs" in reachable("bsstudy.analysis.report.build")


def report_sections_modules() -> list[str]:
    """Report modules that build a section: they define a top-level function named `*_section`. The rest of
    bsstudy.analysis.report is shared ground (runs, document, figures, uncertainty, at_budget) or puts sections together
    (build, publish, wandb_report, ...)."""
    found = []
    for path in sorted((PACKAGE / "analysis" / "report").glob("[a-z]*.py")):
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.FunctionDef) and n.name.endswith("_section") for n in tree.body):
            found.append(f"bsstudy.analysis.report.{path.stem}")
    return found


SECTIONS = report_sections_modules()


@pytest.mark.parametrize("section", SECTIONS)
def test_report_sections_do_not_import_each_other(section):
    """A section reads the sweep through report/runs.py and draws with the shared modules; what two sections
    share lives there, so a section can be changed or removed alone."""
    assert imported_modules(section) & set(SECTIONS) - {section} == set()


def test_the_sections_are_found():
    assert {
        "bsstudy.analysis.report.training",
        "bsstudy.analysis.report.budgets",
        "bsstudy.analysis.report.findings",
    } <= set(SECTIONS)
    assert "bsstudy.analysis.report.runs" not in SECTIONS and "bsstudy.analysis.report.build" not in SECTIONS


@pytest.mark.cli
def test_importing_the_training_loads_nothing_of_the_analysis_side():
    """`import bsstudy.train.run` adds no report module, matplotlib, pandas or scipy to what `import lightning` loads.
    (Lightning itself imports torchmetrics, which imports matplotlib.pyplot whenever matplotlib is installed, so
    the check starts from there: what bsstudy adds is what bsstudy controls.)"""
    import subprocess
    import sys

    code = (
        "import sys, lightning; before = set(sys.modules); import bsstudy.train.run; "
        "print(sorted(m for m in set(sys.modules) - before "
        "if m.startswith(('bsstudy.analysis', 'matplotlib', 'pandas', 'scipy'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_layers_hold():
    """The import contracts of pyproject.toml ([tool.importlinter]: config -> train with probes -> run folder ->
    analysis, each layer importing only from those below it) hold; `make lint` runs the same check."""
    import subprocess
    import sys

    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
