"""memstore's benchmark suite: latency, bandwidth, throughput, scaling, inference, online lag.

Every workload measures memstore next to its baselines in the same run, interleaving them
round by round: the floor (raw pyzmq DEALER/ROUTER carrying the same bytes, and
``numpy.copyto`` for memory bandwidth) and a real ``redis-server`` driven by redis-py.
Run ``python -m benchmarks --quick`` (or ``memstore-bench``); see docs/benchmarks.md.
"""
