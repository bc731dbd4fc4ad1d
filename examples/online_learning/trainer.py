"""Data-parallel training on snapshots as they arrive (torch.distributed: gloo on CPU).

Each rank takes the list entries ``i`` with ``i % world == rank`` as soon as they exist,
keeps them in a replay buffer and trains the surrogate on random patches of it while the
producer runs. The model is pushed into the store (TorchScript) every few seconds, so
in-store inference always has a recent one. Ranks stop together once every snapshot is
consumed and ``--min-epochs`` have run. The loss is the mean squared error of the
predicted next state relative to that of persistence ("no change"): 1 means no skill.

    mpiexec -n 2 python trainer.py
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
import torch.distributed as dist
from common import (
    CONSUMED,
    LOSS_HISTORY,
    MODEL,
    RUN_INFO,
    SNAPSHOTS,
    TRAINER_DONE,
    build_surrogate,
    connect,
    with_x_halo,
)  # fmt: skip

import memstore


def rank_and_world(comm, port: int) -> tuple[int, int, str]:
    """Rank, world size and rendezvous address, from the MPI job or torchrun's variables."""
    host = os.environ.get("MASTER_ADDR", "127.0.0.1")  # set it when trainers span nodes
    port = int(os.environ.get("MASTER_PORT", port))
    if comm is not None:
        return comm.Get_rank(), comm.Get_size(), f"tcp://{host}:{port}"
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return rank, world, f"tcp://{host}:{port}"


class Buffer:
    """This rank's share of the snapshots, pulled as they appear."""

    def __init__(self, client: memstore.Client, rank: int, world: int):
        self.client, self.rank, self.world = client, rank, world
        self.next_index = rank
        self.inputs: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.consumed: list[int] = []

    def pull(self, wait_s: float) -> None:
        """Fetch every new entry of ours; wait (on the server) up to ``wait_s`` for one."""
        if wait_s > 0:
            self.client.poll_list_length_gte(
                SNAPSHOTS, self.next_index + 1, 10, max(1, int(wait_s * 100))
            )
        length = self.client.get_list_length(SNAPSHOTS)
        indices = list(range(self.next_index, length, self.world))
        futures = [self.client.get_dataset_list_range_async(SNAPSHOTS, i, i) for i in indices]
        for index, future in zip(indices, futures):
            (snapshot,) = future.result()
            self.inputs.append(with_x_halo(snapshot.get_tensor("input")))
            self.targets.append(snapshot.get_tensor("target"))
            self.consumed.append(index)
        if indices:
            self.next_index = indices[-1] + self.world

    def batch(self, size: int, crop: int, rng: np.random.Generator):
        """``size`` random ``crop`` x ``crop`` patches (with their halo) and their targets:
        the model is local, so patches teach it as well as whole fields, far cheaper."""
        xs, ys = [], []
        for i in rng.integers(0, len(self.inputs), size):
            rows, cols = self.targets[i].shape
            r, c = rng.integers(0, rows - crop + 1), rng.integers(0, cols - crop + 1)
            xs.append(self.inputs[i][r : r + crop + 2, c : c + crop + 2])
            ys.append(self.targets[i][r : r + crop, c : c + crop])
        return torch.from_numpy(np.stack(xs))[:, None], torch.from_numpy(np.stack(ys))[:, None]

    def scales(self) -> tuple[float, float]:
        """Typical size of one step's change, and of the difference between neighbours."""
        change = [np.mean((t - x[1:-1, 1:-1]) ** 2) for x, t in zip(self.inputs, self.targets)]
        neighbours = [np.mean(np.diff(x, axis=1) ** 2) for x in self.inputs]
        return float(np.sqrt(np.mean(change))), float(np.sqrt(np.mean(neighbours)))


def push_model(client: memstore.Client, model: torch.nn.Module) -> None:
    client.set_model(MODEL, torch.jit.script(model.eval()))
    model.train()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--min-epochs", type=int, default=30)
    p.add_argument("--steps-per-epoch", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--crop", type=int, default=16, help="training patch size")
    p.add_argument(
        "--push-seconds", type=float, default=3.0, help="push the model into the store this often"
    )
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--dist-port", type=int, default=29517)
    p.add_argument("--max-seconds", type=float, default=600)
    args = p.parse_args()
    torch.set_num_threads(1)  # several programs share the cores; gloo overlaps the rest
    client, comm, finish = connect()
    rank, world, rendezvous = rank_and_world(comm, args.dist_port)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    ranks, _, _, steps, send_every = (int(v) for v in client.wait_tensor(RUN_INFO, timeout=300))
    expected = ranks * math.ceil(steps / send_every)
    buffer = Buffer(client, rank, world)
    buffer.pull(wait_s=60)
    if not buffer.inputs:
        raise SystemExit(f"trainer rank {rank}: no snapshot arrived within 60 s")
    scales = torch.tensor(buffer.scales())
    dist.broadcast(scales, src=0)  # the same scales on all ranks: rank 0's
    torch.manual_seed(0)  # every rank starts from the same weights
    model = build_surrogate(scale=scales[0].item(), input_scale=scales[1].item())
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=args.lr)
    rng = np.random.default_rng(rank)
    losses: list[float] = []  # mean squared error relative to persistence's (1 = no skill)
    started = last_push = time.monotonic()
    epoch = 0
    while True:
        buffer.pull(wait_s=0)
        total = torch.zeros(1)
        for _ in range(args.steps_per_epoch):
            x, y = buffer.batch(args.batch_size, args.crop, rng)
            loss = torch.nn.functional.mse_loss(ddp(x), y) / model.scale**2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.detach()
        dist.all_reduce(total)
        losses.append(total.item() / (world * args.steps_per_epoch))
        if rank == 0 and (epoch == 0 or time.monotonic() - last_push > args.push_seconds):
            print(
                f"trainer: epoch {epoch:4d} loss {losses[-1]:.2e} (relative to persistence;"
                f" {len(buffer.inputs)} snapshots on rank 0)",
                flush=True,
            )
            push_model(client, model)
            last_push = time.monotonic()
        epoch += 1
        caught_up = buffer.next_index >= expected
        out_of_time = time.monotonic() - started > args.max_seconds
        done = torch.tensor([1 if (caught_up and epoch >= args.min_epochs) or out_of_time else 0])
        dist.all_reduce(done, op=dist.ReduceOp.MIN)
        if done.item():
            break
    buffer.pull(wait_s=0)  # anything that arrived during the last epoch
    client.put_tensor(f"{CONSUMED}.r{rank}", np.array(buffer.consumed, dtype=np.int64))
    if rank == 0:
        push_model(client, model)
        client.put_tensor(LOSS_HISTORY, np.array(losses))
        client.put_tensor(TRAINER_DONE, np.array([len(losses), losses[0], losses[-1], world]))
        print(
            f"trainer: {len(losses)} epochs, loss {losses[0]:.3e} -> {losses[-1]:.3e}", flush=True
        )
    dist.destroy_process_group()
    finish()


if __name__ == "__main__":
    main()
