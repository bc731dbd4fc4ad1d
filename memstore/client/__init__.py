"""The client: :class:`Client` and the parts it is made of.

Floors, each importing only those below it::

    core        Client: discovery, tensors, polls, admin (+ datasets, models: its mixins)
    base        ClientBase: what the mixins may use of the client
    keys        RawKeys (``client.keys``): calls on stored keys, no prefixes
    shm         the shared-memory path: links to shards, files for puts and gets
    requests    Requests: deadline, size check, the inline turn of a blocking call
    blocking    blocking(x_async): each blocking method made from its async twin
    transport   Transport: the fast path and the pump thread
    (memstore.futures: the futures all of them hand out)
"""

from memstore.client.core import Client

__all__ = ["Client"]
