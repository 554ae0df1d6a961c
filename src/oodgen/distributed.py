"""Data-parallel training with torch.distributed (DDP): ``torchrun --nproc-per-node N -m oodgen run ...``
or ``oodgen run --distributed N ...`` (which starts that torchrun for you).

What each process does:

* every rank trains the CVAE, the n+1 classifier and the plain classifier wrapped in
  :class:`~torch.nn.parallel.DistributedDataParallel`; each global batch (the profile's batch
  size, the same as a one-process run) is split across the ranks, and DDP averages the gradients,
  so the optimisation is that of one process with the same batch;
* every rank generates its own shard of the Type I / Type II outlier pools from the shared CVAE,
  with seeds derived from (run seed, epoch, rank): the pool is as large in all as one process's;
* rank 0 alone writes the checkpoints (every rank waits for it), evaluates and writes
  ``metrics.json`` / ``detector.pt``; a restarted run resumes from the checkpoints on every rank.

Backends: gloo on the CPU, NCCL on GPUs (one GPU per process, ``cuda:LOCAL_RANK``).  With one
process nothing here changes what a run computes (its results stay bit-identical to before).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: ``rank`` of ``world`` (1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch (every rank gets at least one sample)."""
        if not self.active or len(idx) < self.world:
            return idx
        return idx[self.rank::self.world]

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` wrapped in DDP when distributed, else ``model`` itself."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel
        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()

    def sum(self, value: float) -> float:
        """``value`` summed over the ranks (a float; identity with one process)."""
        if not self.active:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64)
        if tdist.get_backend() == "nccl":
            t = t.cuda()
        tdist.all_reduce(t)
        return float(t.item())

    def describe(self) -> dict:
        return {"world_size": self.world,
                "backend": tdist.get_backend() if self.active else None}


def current() -> Dist:
    """The running job's :class:`Dist` (one process unless ``torch.distributed`` is initialised)."""
    if tdist.is_available() and tdist.is_initialized():
        return Dist(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Dist()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "auto") -> Dist:
    """Join the job torchrun started (environment ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...);
    gloo on the CPU, NCCL with CUDA.  Returns the one-process :class:`Dist` outside torchrun."""
    if not launched_by_torchrun():
        return Dist()
    if not tdist.is_initialized():
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        local = int(os.environ.get("LOCAL_RANK", 0))
        if use_cuda:
            torch.cuda.set_device(local)
        else:
            # torchrun sets OMP_NUM_THREADS=1; share this machine's cores between the local ranks
            per = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
            torch.set_num_threads(per)
        tdist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return current()


def shutdown() -> None:
    """Leave the job.  No barrier: rank 0 evaluates alone after the last collective step (the
    end of training), however long that takes, while the other ranks have already left."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def torchrun_argv(nproc: int, argv: list[str]) -> list[str]:
    """The command that runs ``oodgen <argv>`` in ``nproc`` local processes with torchrun
    (``python -m torch.distributed.run``, the same program), on a free local port."""
    import sys
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "oodgen", *argv]
