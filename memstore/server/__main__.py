"""``python -m memstore.server``: the ``memstore-server`` program (:mod:`memstore.server_cli`).

An entry point, not part of the server package's code: nothing imports it.
"""

import sys

from memstore.server_cli import main

sys.exit(main())
