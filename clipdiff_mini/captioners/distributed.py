"""Several processes training one captioner (PyTorch DistributedDataParallel).

Started by ``torchrun --nproc_per_node N ...``, every process sees the
environment variables ``RANK`` (0..N-1), ``LOCAL_RANK`` (its GPU on this
machine), ``WORLD_SIZE`` (N) and ``MASTER_ADDR``/``MASTER_PORT``. Without
them (a notebook, ``python -m ...``) the world is one process and nothing
here does anything: every helper falls back to the single-process answer.

Backends: NCCL between GPUs, gloo between CPU processes (the tests run two
CPU processes with gloo). Process 0 ("rank 0", the *main* process) is the
one that shows progress, validates, and writes checkpoints; the others wait
for it at a barrier.
"""
from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched_by_torchrun() -> bool:
    """True when the environment describes a world of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def current_world() -> World:
    """The world as the process group (or, before it exists, the environment) describes it."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    if launched_by_torchrun():
        return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def init_distributed(device_type: str = "cpu") -> World:
    """Join the process group torchrun prepared (idempotent; a no-op for one process).

    `device_type` "cuda" picks NCCL and binds this process to GPU ``LOCAL_RANK``;
    "cpu" picks gloo.
    """
    if not launched_by_torchrun():
        return World()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed; "
                           "run in one process (python -m ...) or install a full PyTorch")
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
        # a group left alive at interpreter exit can abort the process ("terminate called without an active
        # exception", exit -6) while gloo's threads are torn down: leave it cleanly, whoever started training
        atexit.register(_leave_process_group)
    return current_world()


def _leave_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        try:  # no process leaves while another still talks to it; a crashed peer costs a minute, not a hang
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
            else:
                dist.barrier()
        except Exception:
            pass
        finally:
            dist.destroy_process_group()


def device_for(world: World, device: torch.device) -> torch.device:
    """This process's device: GPU ``LOCAL_RANK`` under torchrun, else `device` unchanged."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def broadcast_object(obj, world: World, src: int = 0):
    """`obj` of rank `src` on every rank (pickled; for small things: histories, scores)."""
    if not world.distributed:
        return obj
    box = [obj if world.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj, world: World) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not world.distributed:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_float(value: float, world: World, device: torch.device, src: int = 0) -> float:
    """Rank `src`'s number on every rank (for example its clock, so all ranks stop together)."""
    if not world.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=src)
    return float(t.item())


def sum_float(value: float, world: World, device: torch.device) -> float:
    """The sum of `value` over all ranks."""
    if not world.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def broadcast_module(module: torch.nn.Module, world: World, src: int = 0) -> None:
    """Copy rank `src`'s parameters and buffers into `module` on every rank (in place)."""
    if not world.distributed:
        return
    with torch.no_grad():
        for v in module.state_dict().values():
            dist.broadcast(v, src=src)


def shard_rows(rows: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's share of a global batch `rows` (B,): contiguous chunks, sizes differing by one at most."""
    return torch.tensor_split(rows, world.size)[world.rank]
