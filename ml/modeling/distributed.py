"""Where training runs: the device, and this process's place in a ``torchrun`` job (DDP).

A single process is the degenerate job (``world_size == 1``): every collective here is then a
no-op, so the trainer is written once for both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# -- torchrun ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job; ``world_size == 1`` is a plain single process.

    torchrun starts one process per device and tells each its ``RANK``, ``LOCAL_RANK`` and
    ``WORLD_SIZE``. The same training code runs in all of them; only the batches each rank sees,
    who validates and who writes files differ. Every collective here is a no-op in a single process.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Distributed:
        """The job torchrun describes in the environment (a single process when it describes none)."""
        env = os.environ if environ is None else environ
        world = int(env.get("WORLD_SIZE") or 1)
        if world <= 1:
            return cls()
        missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
        if missing:
            raise RuntimeError(
                f"WORLD_SIZE={world} but {', '.join(missing)} not set: "
                "start distributed training with torchrun"
            )
        local = int(env.get("LOCAL_WORLD_SIZE") or world)
        return cls(int(env["RANK"]), int(env["LOCAL_RANK"]), world, local)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that validates and writes."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank got here."""
        if self.enabled:
            torch.distributed.barrier()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.enabled:
            return value
        box: list[Any] = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[no-any-return]

    def mean(self, values: list[float]) -> float:
        """The mean of every rank's ``values`` together (NaN when there are none)."""
        if not self.enabled:
            return float(np.mean(values)) if values else float("nan")
        nccl = torch.distributed.get_backend() == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        total = torch.tensor([sum(values), len(values)], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(total)
        return float(total[0] / total[1]) if total[1] > 0 else float("nan")


@contextmanager
def process_group(device: str = "auto") -> Iterator[Distributed]:
    """Join the torchrun job's process group for the block; nothing happens in a single process.

    NCCL when training on CUDA (each rank on the GPU of its ``LOCAL_RANK``), gloo on CPU. A group
    opened by a caller (the CLI opens one around snapshot and training) is used and left open.
    """
    dist = Distributed.from_env()
    if not dist.enabled or torch.distributed.is_initialized():
        yield dist
        return
    cuda = resolve_device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(dist.local_rank)
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    try:
        yield dist
    finally:
        torch.distributed.destroy_process_group()


TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK")


def continue_alone() -> None:
    """Forget the torchrun job after its process group closed: later work here is single-process.

    ``shopflow train``'s rank 0 evaluates, trains the SASRec baseline and registers alone once
    the others have exited; without this, that baseline's :func:`train` would wait for them.
    """
    for name in TORCHRUN_VARIABLES:
        os.environ.pop(name, None)
