"""What the online-learning programs share: key names, the surrogate, rank discovery.

Every program calls :func:`connect`: inside one MPMD ``mpiexec`` line with
``memstore-server --mpi`` ranks (``MEMSTORE_MPMD=1``) that is ``memstore.mpi.connect()``;
otherwise a plain ``memstore.Client()`` (the address comes from ``MEMSTORE_ADDRESS``, set
by run.py or the launch/ scripts) and the program's own MPI job, if it has one.
"""

from __future__ import annotations

import os

SNAPSHOTS = "snapshots"  # the stream of snapshots: bounded (--window), every rank appends
# [ranks, ny, nx, steps, send_every, window, max_in_flight]: written by producer rank 0
RUN_INFO = "run/info"
PRODUCER_DONE = "producer/done"  # one per producer rank: [snapshots, bytes, solve s, store s]
TRAINER_DONE = "trainer/done"  # [epochs, first loss, last loss, trainer ranks]
LOSS_HISTORY = "trainer/loss"
CONSUMED = "trainer/consumed"  # per trainer rank: the stream steps it trained on
INFERENCE_LATEST = "inference/latest"  # [step], and the fields below
INFERENCE_ERRORS = "inference/errors"  # [[step, surrogate error, persistence error], ...]
MODEL = "surrogate"


def connect():
    """``(client, comm, finish)``: a client of the store, this program's communicator (None
    without MPI) and a function to call when the program is done (collective in MPMD)."""
    import memstore

    if os.environ.get("MEMSTORE_MPMD") == "1":
        from memstore import mpi

        store = mpi.connect()
        return store.client, store.comm, store.shutdown
    client = memstore.Client()
    return client, _own_mpi_job(), client.close


def _own_mpi_job():
    if not any(v in os.environ for v in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")):
        return None
    from mpi4py import MPI

    return MPI.COMM_WORLD


def build_surrogate(hidden: int = 32, scale: float = 1.0, input_scale: float = 1.0):
    """A small network that maps a patch with a one-cell halo all round to the patch's
    interior one time step later.

    Each cell sees its 3x3 neighbourhood minus its own value, divided by ``input_scale``
    (the typical difference between neighbours), and a per-cell MLP predicts the change in
    units of ``scale`` (its typical size): ``u + scale * mlp((patch - u) / input_scale)``.
    Both scales make the numbers the network sees and produces of order one. The output
    layer starts at zero, so an untrained model predicts "no change" (persistence).
    """
    import torch
    import torch.nn.functional as F

    class Surrogate(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = torch.nn.Conv2d(9, hidden, 1)
            self.out = torch.nn.Conv2d(hidden, 1, 1)
            torch.nn.init.zeros_(self.out.weight)
            torch.nn.init.zeros_(self.out.bias)
            self.register_buffer("scale", torch.tensor(float(scale)))
            self.register_buffer("input_scale", torch.tensor(float(input_scale)))

        def forward(self, x):
            b, h, w = x.shape[0], x.shape[2] - 2, x.shape[3] - 2
            centre = x[:, :, 1:-1, 1:-1]
            patches = F.unfold(x, 3).reshape(b, 9, h, w)
            features = (patches - centre) / self.input_scale
            return centre + self.scale * self.out(torch.tanh(self.hidden(features)))

    return Surrogate()


def with_x_halo(field):
    """Add the periodic halo in x (the producer's input carries its y halo already)."""
    import numpy as np

    return np.pad(field, ((0, 0), (1, 1)), mode="wrap")
