"""The public surface is exactly ``memstore.__all__``, and importing memstore stays light."""

from __future__ import annotations

import subprocess
import sys

import memstore

EXPECTED = {
    "AuthError",
    "Client",
    "ConnectionLost",
    "DataSet",
    "Dataset",
    "Future",
    "KeyNotFound",
    "LocalCluster",
    "MemstoreError",
    "ModelError",
    "NoAnswer",
    "ProtocolError",
    "RemoteError",
    "SnapshotError",
    "StepDropped",
    "StoreFull",
    "Stream",
    "StreamClosed",
    "StreamWriter",
    "Timeout",
    "WrongType",
    "wait",
}


def test_all_is_the_expected_public_set():
    """__all__ lists exactly the public names, each once."""
    assert set(memstore.__all__) == EXPECTED
    assert len(memstore.__all__) == len(set(memstore.__all__))


def test_every_exported_name_exists_and_belongs_to_memstore():
    """Every name in __all__ is an attribute defined inside the memstore package."""
    for name in memstore.__all__:
        member = getattr(memstore, name)
        assert member.__module__.startswith("memstore."), (name, member.__module__)


def test_no_other_public_names_leak():
    """Public attributes of the package are __all__, its submodules and __version__."""
    public = {name for name in vars(memstore) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(memstore, name)).__name__ == "module"}
    assert public - modules == EXPECTED
    assert isinstance(memstore.__version__, str)


def test_import_does_not_pull_in_torch_or_mpi4py():
    """`import memstore` (and making a DataSet) imports neither torch nor mpi4py."""
    code = (
        "import sys, memstore, numpy\n"
        "memstore.DataSet('d').add_tensor('x', numpy.ones(2))\n"
        "heavy = sorted(m for m in ('torch', 'mpi4py', 'cloudpickle') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_server_module_import_stays_light():
    """Importing the shard server does not import torch either (a shard without models
    must start fast)."""
    code = "import sys, memstore.server.shard\nprint('torch' in sys.modules)\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
