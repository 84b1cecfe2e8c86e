"""The package layout: one folder per stage, imports only downwards, small folders and files."""

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "myna_rpe_jax"
# The pipeline, lowest first: a stage may import its own folder and the ones before it. Embed
# and probe sit below train, so inference never pulls in the training machinery (the trainer
# imports the probes for its evaluators, not the other way round).
STAGES = (
    "data", "model", "objectives", "run", "embed", "probe", "train", "playlist", "spotify"
)  # fmt: skip
MAX_MODULES = 8
MAX_LINES = 420  # "about 400"


@functools.cache
def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (read once)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


@functools.cache
def imports_of(path: Path) -> frozenset[str]:
    """The myna_rpe_jax modules `path` imports (anywhere in the file, lazy imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(name for name in names if name in modules())


def stage(module: str) -> int:
    """The position of a module's stage; -1 for the shared top-level modules."""
    parts = module.split(".")
    return STAGES.index(parts[1]) if len(parts) > 1 and parts[1] in STAGES else -1


def test_every_folder_is_a_stage_and_every_module_is_in_one():
    top_modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top_modules <= {"distributed", "errors", "failures", "files"}, top_modules
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(STAGES)


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_only_go_down_the_pipeline(module):
    for imported in imports_of(modules()[module]):
        assert stage(imported) <= stage(module), f"{module} imports the higher {imported}"
        if stage(module) == -1:
            assert stage(imported) == -1, f"shared {module} imports the stage module {imported}"


def test_no_import_cycle():
    graph = {module: imports_of(path) - {module} for module, path in modules().items()}
    done, active = set(), []

    def visit(module):
        if module in active:
            raise AssertionError("import cycle: " + " -> ".join([*active, module]))
        if module in done:
            return
        active.append(module)
        for imported in graph[module]:
            # A package's __init__ is imported with its modules: only real edges count.
            if not module.startswith(imported + "."):
                visit(imported)
        active.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_folders_and_modules_stay_small():
    for folder in [p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__"]:
        count = len([p for p in folder.glob("*.py") if p.name != "__init__.py"])
        if folder.name != "parsers":  # one parser per published dataset is allowed
            assert count <= MAX_MODULES, f"{folder} holds {count} modules"
    for path in PACKAGE.rglob("*.py"):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= MAX_LINES, f"{path} has {lines} lines"
