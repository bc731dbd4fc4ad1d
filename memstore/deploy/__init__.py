"""Start, watch and stop memstore processes: shards, gateways, and jobs under schedulers.

Modules, lowest first (each imports only those before it):

- :mod:`~memstore.deploy.processes`: the child-process type, its ready line, its stop;
- :mod:`~memstore.deploy.admin`: one-shot admin requests (``cluster``, ``shutdown``);
- :mod:`~memstore.deploy.curve`: a keys folder as shard options and a launcher's key;
- :mod:`~memstore.deploy.schedulers`: ``mpiexec`` / Slurm / PBS command lines and scripts;
- :mod:`~memstore.deploy.gateways`: ``memstore gateway`` processes;
- :mod:`~memstore.deploy.local`: shards on this machine, :class:`LocalCluster`;
- :mod:`~memstore.deploy.jobs`: :class:`Launcher` and its :class:`Job`.
"""

from __future__ import annotations

from memstore.deploy.jobs import Job, Launcher
from memstore.deploy.local import LocalCluster

__all__ = ["Job", "Launcher", "LocalCluster"]
