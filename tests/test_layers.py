"""The dependency direction drawn in docs/design.md ("Layers"), checked on the imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "memstore"

#: Modules the server must never import: it sits below the client, mpi and the launchers.
ABOVE_SERVER = ("memstore.client", "memstore.transport", "memstore.mpi", "memstore.launcher",
                "memstore.cli", "memstore.server_cli")  # fmt: skip


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (lazy imports inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def within(name: str, modules: tuple[str, ...]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def test_the_server_imports_nothing_above_it():
    for path in sorted((PACKAGE / "server").glob("*.py")):
        if path.name == "__main__.py":  # the `python -m memstore.server` entry point
            continue
        bad = {name for name in imports(path) if within(name, ABOVE_SERVER)}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_batching_does_not_import_the_executor_or_models():
    names = imports(PACKAGE / "server" / "batching.py")
    assert not {
        n for n in names if n.startswith(("memstore.server.models", "memstore.server.executor"))
    }


def test_mpi_imports_no_program():
    for path in sorted((PACKAGE / "mpi").glob("*.py")):
        bad = {n for n in imports(path) if within(n, ("memstore.server_cli", "memstore.cli"))}
        assert not bad, f"mpi/{path.name} imports {sorted(bad)}"


def test_model_code_takes_kind_names_from_one_place():
    for name in ("client/models.py", "server/models.py", "server/model_ops.py"):
        source = (PACKAGE / name).read_text()
        assert "memstore.kinds import" in source, name
        assert '= "model"' not in source and '"model", "script"' not in source, name
