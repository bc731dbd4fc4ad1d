"""Data-parallel training on snapshots as they arrive (torch.distributed: gloo on CPU).

Each rank reads the ``snapshots`` stream through ``memstore.torch.StreamDataset`` in
replay mode: random patches of the newest ``window`` snapshots the store holds, refreshed
as the producer appends (the store keeps the window; the trainer holds no buffer of its
own), through a ``DataLoader``. The model is pushed into the store (TorchScript) every few
seconds, so in-store inference always has a recent one. Ranks stop together once the
stream is closed and ``--min-epochs`` have run. The loss is the mean squared error of the
predicted next state relative to that of persistence ("no change"): 1 means no skill.

    mpiexec -n 2 python trainer.py
"""

from __future__ import annotations

import argparse
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
from torch.utils.data import DataLoader

import memstore
from memstore.torch import StreamDataset


def rank_and_world(comm, port: int) -> tuple[int, int, str]:
    """Rank, world size and rendezvous address, from the MPI job or torchrun's variables."""
    host = os.environ.get("MASTER_ADDR", "127.0.0.1")  # set it when trainers span nodes
    port = int(os.environ.get("MASTER_PORT", port))
    if comm is not None:
        return comm.Get_rank(), comm.Get_size(), f"tcp://{host}:{port}"
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return rank, world, f"tcp://{host}:{port}"


class RandomPatch:
    """A random ``crop`` x ``crop`` patch of a snapshot (with its halo) and its target: the
    model is local, so patches teach it as well as whole fields, far cheaper."""

    def __init__(self, crop: int):
        self.crop = crop

    def __call__(self, item: dict) -> tuple[torch.Tensor, torch.Tensor]:
        field = torch.nn.functional.pad(item["input"][None], (1, 1, 0, 0), mode="circular")[0]
        rows, cols = item["target"].shape
        r, c = (int(torch.randint(0, n - self.crop + 1, ())) for n in (rows, cols))
        x = field[r : r + self.crop + 2, c : c + self.crop + 2]
        return x[None], item["target"][None, r : r + self.crop, c : c + self.crop]


def scales(items: list) -> tuple[float, float]:
    """Typical size of one step's change, and of the difference between neighbours."""
    fields = [(with_x_halo(i["input"]), i["target"]) for _, i in items]
    change = [np.mean((t - x[1:-1, 1:-1]) ** 2) for x, t in fields]
    neighbours = [np.mean(np.diff(x, axis=1) ** 2) for x, _ in fields]
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
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--dist-port", type=int, default=29517)
    p.add_argument("--max-seconds", type=float, default=600)
    args = p.parse_args()
    torch.set_num_threads(1)  # several programs share the cores; gloo overlaps the rest
    client, comm, finish = connect()
    rank, world, rendezvous = rank_and_world(comm, args.dist_port)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    window = int(client.wait_tensor(RUN_INFO, timeout=300)[5])
    stream = client.stream(SNAPSHOTS)
    if not stream.wait(0, timeout=60):
        raise SystemExit(f"trainer rank {rank}: no snapshot arrived within 60 s")
    scale = torch.tensor(scales(stream.window(16)))
    dist.broadcast(scale, src=0)  # the same scales on all ranks: rank 0's
    torch.manual_seed(0)  # every rank starts from the same weights
    model = build_surrogate(scale=scale[0].item(), input_scale=scale[1].item())
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=args.lr)
    samples = StreamDataset(
        stream, "replay", window=window, samples=args.steps_per_epoch * args.batch_size,
        transform=RandomPatch(args.crop), with_step=True, seed=rank,
    )  # fmt: skip
    loader = DataLoader(samples, batch_size=args.batch_size, num_workers=args.workers)
    losses: list[float] = []  # mean squared error relative to persistence's (1 = no skill)
    consumed: set[int] = set()  # the stream steps trained on
    started = last_push = time.monotonic()
    epoch = 0
    while True:
        closed = stream.info()["closed"]  # before the epoch, so it trains on the last window
        total = torch.zeros(1)
        for steps, (x, y) in loader:
            consumed.update(steps.tolist())
            loss = torch.nn.functional.mse_loss(ddp(x), y) / model.scale**2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.detach()
        dist.all_reduce(total)
        losses.append(total.item() / (world * args.steps_per_epoch))
        if rank == 0 and (epoch == 0 or time.monotonic() - last_push > args.push_seconds):
            print(f"trainer: epoch {epoch:4d} loss {losses[-1]:.2e} (relative to persistence;"
                  f" newest snapshot trained on: {max(consumed)})", flush=True)  # fmt: skip
            push_model(client, model)
            last_push = time.monotonic()
        epoch += 1
        out_of_time = time.monotonic() - started > args.max_seconds
        done = torch.tensor([1 if (closed and epoch >= args.min_epochs) or out_of_time else 0])
        dist.all_reduce(done, op=dist.ReduceOp.MIN)
        if done.item():
            break
    client.put_tensor(f"{CONSUMED}.r{rank}", np.array(sorted(consumed), dtype=np.int64))
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
