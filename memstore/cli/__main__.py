"""``python -m memstore.cli``: the ``memstore`` command (batch scripts and gateways use it)."""

from memstore.cli.main import main

raise SystemExit(main())
