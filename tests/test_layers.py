"""The layout drawn in docs/design.md ("Layers"), checked on the code.

The drawing is the source of truth: each line of its ``layers`` block names units (a
sub-package of memstore, or a top-level module) that may import only units on lower lines.
A unit missing from the drawing, an import that runs up or sideways, a module importing
another module's underscore names, or a function over 60 lines fails here.
"""

from __future__ import annotations

import ast
import importlib
import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "memstore"
DESIGN = ROOT / "docs" / "design.md"

#: Old module paths kept one release as aliases (they import the new path and warn).
ALIASES = {
    "memstore.launcher": "memstore.deploy",
    "memstore.schedulers": "memstore.deploy.schedulers",
    "memstore.gateway.processes": "memstore.deploy.gateways",
    "memstore.server_cli": "memstore.cli.server",
    "memstore.transport": "memstore.client.transport",
    "memstore.client_models": "memstore.client.models",
    "memstore.client_datasets": "memstore.client.datasets",
    "memstore.shm_client": "memstore.client.shm",
}

#: Argument-parser tables: long, but one ``add_argument`` after another.
PARSER_TABLES = {("memstore.cli.main", "parser"), ("memstore.cli.server", "parser")}
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package but the aliases and ``__main__`` entry points (they
    stand above everything: nothing imports them)."""
    found = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    return {
        name: path
        for name, path in found.items()
        if name not in ALIASES and path.name != "__main__.py" and name != "memstore"
    }


def imports(path: Path) -> set[str]:
    """Every memstore module ``path`` imports, at any depth (lazy imports too)."""
    names = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n.startswith("memstore.")}


def drawn_layers() -> list[list[str]]:
    """The units of docs/design.md's ``layers`` block, top line first."""
    block = re.search(r"```layers\n(.*?)```", DESIGN.read_text(), re.S)
    assert block, "docs/design.md has no ```layers block"
    return [re.split(r"\s{2,}", line.strip())[0].split() for line in block[1].splitlines()]


def unit_of(module: str, units: set[str]) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in units else None


def test_every_module_is_drawn():
    units = {u for line in drawn_layers() for u in line}
    missing = {m for m in modules() if unit_of(m, units) is None}
    assert not missing, f"docs/design.md's layers block does not draw {sorted(missing)}"


def test_imports_point_down_the_drawing():
    layers = drawn_layers()
    floor = {unit: len(layers) - i for i, line in enumerate(layers) for unit in line}
    bad = []
    for name, path in modules().items():
        mine = unit_of(name, set(floor))
        for imported in imports(path):
            theirs = unit_of(imported, set(floor))
            if imported in ALIASES:
                bad.append(f"{name} imports the deprecated {imported}")
            elif theirs and theirs != mine and floor[theirs] >= floor[mine]:
                bad.append(f"{name} ({mine}) imports {imported} ({theirs}): not below it")
    assert not bad, "\n".join(sorted(bad))


def is_own_submodule(importer: str, package: str, name: str) -> bool:
    """``from memstore.mpi import _plan`` inside memstore.mpi: a package's private module,
    used by its own modules (mpi4py's ``futures/_core`` pattern)."""
    path = PACKAGE.parent.joinpath(*package.split("."), name)
    own = importer == package or importer.startswith(package + ".")
    return own and (path.with_suffix(".py").exists() or path.is_dir())


def test_no_module_imports_another_modules_underscore_names():
    bad = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        imported_modules = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("memstore"):
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    if private and not is_own_submodule(name, node.module, alias.name):
                        bad.append(f"{name}: from {node.module} import {alias.name}")
                    imported_modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("memstore"):
                        imported_modules[alias.asname or alias.name.split(".")[0]] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in imported_modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                bad.append(f"{name}: {node.value.id}.{node.attr}")
    assert not bad, "\n".join(sorted(bad))


def members_defined_in(tree: ast.Module) -> set[str]:
    """Names a module gives its own classes and objects: methods, class attributes and
    ``x.name = ...`` stores (module-level functions are not members)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    names.add(item.name)
                elif isinstance(item, ast.Assign | ast.AnnAssign):
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return names


def test_no_module_uses_private_members_it_does_not_define():
    """``ctx.client._call(...)``: reaching into another module's object. What is shared is
    made public, with a docstring that says what it promises."""
    bad = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        own = members_defined_in(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and node.attr not in own
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                bad.append(f"{name}: {ast.unparse(node)}")
    assert not bad, "\n".join(sorted(set(bad)))


def test_no_function_is_over_60_lines():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and (name, node.name) not in PARSER_TABLES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, "\n".join(sorted(long))


@pytest.mark.parametrize("old", sorted(ALIASES))
def test_old_module_paths_still_work_and_say_where_to_go(old):
    import sys

    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        alias = importlib.import_module(old)
    assert any(
        issubclass(w.category, DeprecationWarning) and ALIASES[old] in str(w.message)
        for w in caught
    ), f"importing {old} gave no DeprecationWarning naming {ALIASES[old]}"
    importlib.import_module(ALIASES[old])
    public = [n for n in dir(alias) if not n.startswith("_")]
    assert public, f"{old} re-exports nothing"
    defined_here = [
        n for n in public if getattr(getattr(alias, n), "__module__", None) == alias.__name__
    ]
    assert not defined_here, f"{old} defines {defined_here} itself instead of re-exporting"


def test_the_server_is_given_what_it_needs_rather_than_importing_it():
    """batching.py is handed callables: it imports neither the executor nor models."""
    names = imports(PACKAGE / "server" / "batching.py")
    assert not {
        n for n in names if n.startswith(("memstore.server.models", "memstore.server.executor"))
    }


def test_model_code_takes_kind_names_from_one_place():
    for name in ("client/models.py", "server/models.py", "server/model_ops.py"):
        source = (PACKAGE / name).read_text()
        assert "memstore.kinds import" in source, name
        assert '= "model"' not in source and '"model", "script"' not in source, name
