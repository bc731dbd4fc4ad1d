"""The simulation: 2-D advection-diffusion, MPI domain-decomposed in y with halo exchange.

Every ``--send-every`` steps each rank appends its subdomain to the ``snapshots`` stream
(``input``: the field with one halo row each side; ``target``: the interior one step
later; ``where``: step, rank and the strip's rows). The stream keeps the newest
``--window`` steps (older ones are dropped on the shards), so the store's memory stays
flat however long the run; appends are non-blocking with a bounded number in flight, so
the solver never waits for consumers.

    mpiexec -n 2 python producer.py --ny 128 --nx 128 --steps 400 --send-every 4
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import PRODUCER_DONE, RUN_INFO, SNAPSHOTS, connect

import memstore

NU, CX, CY, DT = 1.0, 0.6, 0.3, 0.2  # grid units; NU*DT = 0.2 < 0.25 keeps it stable


class Solver:
    """One rank's strip of rows ``[y0, y1)`` of a periodic ny x nx grid."""

    def __init__(self, comm, ny: int, nx: int, seed: int):
        self.comm = comm
        self.rank, self.size = (comm.Get_rank(), comm.Get_size()) if comm else (0, 1)
        if ny % self.size:
            raise SystemExit(f"--ny {ny} must divide evenly over {self.size} ranks")
        rows = ny // self.size
        self.y0, self.y1, self.nx = self.rank * rows, (self.rank + 1) * rows, nx
        self.u = np.zeros((rows + 2, nx))  # one halo row above and below
        self.u[1:-1] = initial_condition(ny, nx, seed)[self.y0 : self.y1]

    def exchange_halos(self) -> None:
        if self.comm is None or self.size == 1:
            self.u[0], self.u[-1] = self.u[-2], self.u[1]
            return
        up, down = (self.rank - 1) % self.size, (self.rank + 1) % self.size
        self.comm.Sendrecv(self.u[1].copy(), dest=up, recvbuf=self.u[-1], source=down)
        self.comm.Sendrecv(self.u[-2].copy(), dest=down, recvbuf=self.u[0], source=up)

    def step(self) -> None:
        u = self.u
        c = u[1:-1]
        east, west = np.roll(c, -1, axis=1), np.roll(c, 1, axis=1)
        north, south = u[2:], u[:-2]
        laplacian = east + west + north + south - 4 * c
        advection = CX * (east - west) / 2 + CY * (north - south) / 2
        self.u[1:-1] = c + DT * (NU * laplacian - advection)


def initial_condition(ny: int, nx: int, seed: int) -> np.ndarray:
    """A random sum of Gaussian blobs: every run starts somewhere else."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:ny, 0:nx]
    field = np.zeros((ny, nx))
    for _ in range(rng.integers(4, 9)):
        cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
        width = rng.uniform(0.04, 0.12) * min(nx, ny)
        field += rng.uniform(-1, 1) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width**2))
    return field


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ny", type=int, default=128)
    p.add_argument("--nx", type=int, default=128)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--send-every", type=int, default=4)
    p.add_argument("--seed", type=int, default=None, help="default: a fresh random seed")
    p.add_argument("--max-in-flight", type=int, default=8)
    p.add_argument("--window", type=int, default=128, help="snapshots the store keeps")
    args = p.parse_args()

    client, comm, finish = connect()
    seed = args.seed if args.seed is not None else int(time.time())
    if comm is not None:
        seed = comm.bcast(seed, root=0)
    solver = Solver(comm, args.ny, args.nx, seed)
    if solver.rank == 0:
        info = [solver.size, args.ny, args.nx, args.steps, args.send_every, args.window]
        info.append(args.max_in_flight)
        client.put_tensor(RUN_INFO, np.array(info, dtype=np.int64))
    stream = client.stream(SNAPSHOTS, maxlen=args.window, policy="drop_oldest")
    writer = memstore.StreamWriter(stream, max_in_flight=args.max_in_flight, comm=comm)

    sent = nbytes = 0
    solve_time = store_time = 0.0
    for step in range(args.steps):
        started = time.perf_counter()
        solver.exchange_halos()
        snapshot_input = solver.u.astype(np.float32) if step % args.send_every == 0 else None
        solver.step()
        solve_time += time.perf_counter() - started
        if snapshot_input is None:
            continue
        started = time.perf_counter()
        where = np.array([step, solver.rank, solver.y0, solver.y1], dtype=np.int64)
        target = solver.u[1:-1].astype(np.float32)
        writer.append({"input": snapshot_input, "target": target, "where": where})
        sent += 1
        nbytes += snapshot_input.nbytes * 2
        store_time += time.perf_counter() - started
    started = time.perf_counter()
    writer.close()  # every rank's appends answered, then rank 0 ends the stream
    store_time += time.perf_counter() - started
    stats = np.array([sent, nbytes, solve_time, store_time], dtype=np.float64)
    client.put_tensor(f"{PRODUCER_DONE}.r{solver.rank}", stats)
    print(
        f"producer rank {solver.rank}: {sent} snapshots, {nbytes / 2**20:.1f} MiB; "
        f"solve {solve_time:.2f}s, memstore {store_time:.2f}s "
        f"({100 * store_time / max(solve_time + store_time, 1e-9):.0f}% of the time)",
        flush=True,
    )
    finish()


if __name__ == "__main__":
    main()
