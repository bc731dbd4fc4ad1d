"""The kinds of value a key can hold, as they travel in the ``kind`` header field.

One place for the names: client, shards and store all import them from here.
"""

from __future__ import annotations

TENSOR, DATASET, LIST, MODEL, SCRIPT = "tensor", "dataset", "list", "model", "script"
#: Kinds every shard holds a copy of (so their keys are not routed by placement).
REPLICATED = (MODEL, SCRIPT)
