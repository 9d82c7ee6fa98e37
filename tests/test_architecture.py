"""The floors of docs/architecture.md, enforced: no module imports one of a higher floor, and
no two modules import each other.

Every module under ``src/plasticollapse`` is parsed with :mod:`ast`; every ``import`` and
``from ... import`` counts, at module level, inside functions (lazy imports) and under
``if TYPE_CHECKING`` alike: a lazy import up a floor is still a dependency up a floor. A
module's floor is that of its top-level package (``runs/``, ``studies/``, ...), as the table
of docs/architecture.md lists them. Imports within one floor are allowed.

Strings handed to :func:`importlib.import_module` (the study registry's ``"module:attribute"``,
a spec's study target) are not imports: resolving a name given at run time is how a low floor
runs what a higher one registered.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "plasticollapse"

#: docs/architecture.md's table: top-level part of the package -> its floor.
FLOORS = {
    "runs": 0,
    "data": 0,  # datasets on disk: imports nothing else of the package (a sweep prepares them)
    "metrics": 1,
    "models": 1,
    "analysis": 1,
    "report": 1,  # the report toolkit (format, plots, render, predictors, section)
    "engines": 2,
    "remedies": 2,
    "training": 3,
    "studies": 4,
    "cli": 5,
    "predictors_cli": 5,
    "results_cli": 5,
    "matrix": 5,
    "integrations": 5,
    # the package itself: importing any module of it runs its __init__, which holds the
    # version and a table of lazy exports (strings), and imports nothing of the package
    "__init__": 0,
    "__main__": 5,
}

#: (importing module, imported module) pairs still to remove, each with its reason. Keep
#: this list short: a new entry is a new debt.
KNOWN_EXCEPTIONS = {
    # Run folders written before config.json recorded the study's step and setting keys
    # (and setting fields) are read with the registry's (analysis/run_keys.py).
    ("plasticollapse.analysis.run_keys", "plasticollapse.studies"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(module: str) -> int | None:
    """The floor of a ``plasticollapse`` module, or None for a module outside the package."""
    parts = module.split(".")
    if parts[0] != "plasticollapse":
        return None
    top = parts[1] if len(parts) > 1 else "__init__"
    return FLOORS[top]


def imported_modules(path: Path) -> set[str]:
    """Every package module ``path`` imports, anywhere in its body."""
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_in(source: str, module: str, is_package: bool) -> set[str]:
    """Every package module ``source`` (module ``module``) imports, anywhere in its body:
    at module level, in functions, under ``if TYPE_CHECKING``; relative imports resolved."""
    tree = ast.parse(source)
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *filter(None, [base])])
            for alias in node.names:
                # ``from plasticollapse import studies`` imports the subpackage; a name
                # defined in ``base`` imports ``base``
                submodule = f"{base}.{alias.name}"
                found.add(submodule if _exists(submodule) else base)
    return {name for name in found if name.startswith("plasticollapse") and _exists(name)}


def _exists(module: str) -> bool:
    """A module or package of the source tree (not a name imported from one)."""
    relative = Path(*module.split("."))
    return (SRC / relative).with_suffix(".py").exists() or (SRC / relative).is_dir()


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_top_level_part_of_the_package_has_a_floor():
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in sources()}
    assert tops <= set(FLOORS), f"give these a floor (here and in docs): {tops - set(FLOORS)}"


def test_no_module_imports_a_module_of_a_higher_floor():
    upward = []
    for path in sources():
        importer = module_name(path)
        for imported in imported_modules(path):
            if floor_of(imported) > floor_of(importer) and (importer, imported) not in (
                KNOWN_EXCEPTIONS
            ):
                upward.append(f"{importer} (floor {floor_of(importer)}) imports {imported}")
    assert not upward, "imports up a floor:\n" + "\n".join(sorted(upward))


def test_the_known_exceptions_still_exist():
    # an exception removed from the code must leave this list too, or it would excuse a
    # regression later
    imports = {module_name(p): imported_modules(p) for p in sources()}
    stale = [pair for pair in KNOWN_EXCEPTIONS if pair[1] not in imports.get(pair[0], set())]
    assert not stale, f"no longer imported; remove from KNOWN_EXCEPTIONS: {stale}"


def test_the_checker_sees_lazy_and_type_checking_imports():
    # what a checker reading only module-level statements would miss
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from plasticollapse.studies.base import RunSpec\n"
        "def f():\n    from plasticollapse import cli\n"
        "    from . import sweep\n"
    )
    found = imports_in(source, "plasticollapse.runs.probe", is_package=False)
    assert {"plasticollapse.studies.base", "plasticollapse.cli", "plasticollapse.runs.sweep"} <= (
        found
    )


#: Pairs of modules that import each other, still to untangle. Keep this list short.
KNOWN_CYCLES: set[tuple[str, str]] = set()


def mutual_imports() -> set[tuple[str, str]]:
    imports = {module_name(p): imported_modules(p) for p in sources()}
    return {
        (a, b) for a, found in imports.items() for b in found if a < b and a in imports.get(b, ())
    }


def test_no_two_modules_import_each_other():
    cycles = mutual_imports() - KNOWN_CYCLES
    assert not cycles, "modules that import each other:\n" + "\n".join(map(str, sorted(cycles)))


def test_the_checker_tells_a_submodule_from_a_name():
    source = "from plasticollapse.analysis import inference, load_results\n"
    found = imports_in(source, "plasticollapse.report.probe", is_package=False)
    assert found == {"plasticollapse.analysis.inference", "plasticollapse.analysis"}
