"""The kinds of value a key can hold, as they travel in the ``kind`` header field.

One place for the names: client, shards and store all import them from here.
"""

from __future__ import annotations

TENSOR, DATASET, LIST, MODEL, SCRIPT = "tensor", "dataset", "list", "model", "script"
#: A stream's state (its steps' data are tensors and datasets under keys of their own).
STREAM = "stream"
#: Kinds every shard holds a copy of (so their keys are not routed by placement).
REPLICATED = (MODEL, SCRIPT)
