"""The programs: ``memstore`` (:mod:`memstore.cli.main`) and ``memstore-server``
(:mod:`memstore.cli.server`, also ``python -m memstore.server``).

They stand above every other package: nothing in memstore imports them.
``memstore.cli.main`` here is the ``memstore`` command's function (``from memstore.cli
import main`` keeps working); the module of that name is ``sys.modules["memstore.cli.main"]``.
"""

from __future__ import annotations

from memstore.cli.main import main

__all__ = ["main"]
