"""``python -m memstore.server``: the ``memstore-server`` program (:mod:`memstore.cli.server`).

An entry point, not part of the server package's code: nothing imports it.
"""

from memstore.cli.server import main

raise SystemExit(main())
