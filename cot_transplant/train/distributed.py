"""Data parallelism through Accelerate's process state: `accelerate launch -m cot_transplant train CONFIG`
on GPUs, `torchrun --nproc_per_node N -m cot_transplant train CONFIG` for CPU processes.

The launcher starts the processes and Accelerate the process group (gloo on CPU, NCCL on GPUs). Each
process runs the same model with the same seed, takes every `world`-th row of each
optimizer step's rows, backpropagates its share with the global scale `1/accumulate_to`,
and the trainable gradients are summed across processes before the (identical) optimizer
step, so all processes keep identical adapters. The two-adapter, two-phase step is not a
single `forward -> backward`, so the model is not wrapped in DDP/FSDP: gradients are
reduced explicitly once per optimizer step (the same communication DDP would do).
Only the main process writes files.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from cot_transplant.errors import UserError


# What `accelerate launch` asks for that this loop does not do, and why (read from its environment variables).
UNSUPPORTED = {
    "ACCELERATE_USE_FSDP": "FSDP sharding (each process keeps a full replica; the two-phase step is not wrapped)",
    "ACCELERATE_USE_DEEPSPEED": "DeepSpeed (each process keeps a full replica; the two-phase step is not wrapped)",
    "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM parallelism",
}
SUPPORTED = ("data parallel across processes (`accelerate launch --num_processes N`, any number of GPUs or "
             "CPU processes) with --mixed_precision no; the precision is model.dtype (bf16 on GPUs)")


def refuse_unsupported(env) -> None:
    """Raise UserError when the launcher's environment `env` asks for FSDP, DeepSpeed or mixed precision.

    Accelerate reads these from its config file and command line; a loop that ignored them would run
    full replicas in the model's own precision while the user believes otherwise.
    """
    for key, what in UNSUPPORTED.items():
        if env.get(key, "").lower() in ("true", "1", "yes"):
            raise UserError(f"accelerate config: {what} is not supported ({key}); supported: {SUPPORTED}")
    mixed = env.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if mixed not in ("no", ""):
        raise UserError(f"accelerate config: mixed_precision={mixed} is not supported (autocast would not cover "
                        f"the transplant's two-phase backward); set model.dtype instead. Supported: {SUPPORTED}")


def same_device(a: torch.device, b: torch.device) -> bool:
    """One device, whether or not an index is written (`cpu` is `cpu:0`; `cuda` is the current GPU)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


class Dist:
    """The process layout: rank, world size, and the few collective operations the loop needs."""

    def __init__(self, cpu: bool | None = None) -> None:
        """`cpu`: CPU processes (gloo) even where CUDA is present; default: where there is no CUDA, or the
        launcher said `--cpu`. (Accelerate's process state treats a launch without CUDA as one process
        unless told it is a CPU launch.)"""
        refuse_unsupported(os.environ)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = 0
        self.state = None
        self.device = torch.device("cpu")  # where collective operations put their tensors
        if self.world > 1:
            from accelerate import PartialState

            if cpu is None:
                cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("true", "1")
            self.state = PartialState(cpu=cpu)
            self.rank, self.world = self.state.process_index, self.state.num_processes
            self.device = self.state.device  # NCCL (GPUs) reduces only tensors on this process's GPU

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence) -> list:
        """This process's share: every world-th item, starting at its rank."""
        return list(items[self.rank::self.world])

    def sum_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum .grad across processes (a missing .grad counts as zeros)."""
        if self.world == 1:
            return
        from accelerate.utils import reduce

        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            if not same_device(p.grad.device, self.device):
                raise RuntimeError(f"a gradient on {p.grad.device} cannot be reduced by this process group, "
                                   f"which reduces on {self.device}")
            p.grad.copy_(reduce(p.grad, reduction="sum"))

    def gather_lists(self, values: dict[str, list]) -> dict[str, list]:
        """Concatenate each list across processes (rank order)."""
        if self.world == 1:
            return values
        from accelerate.utils import gather_object

        return {k: list(gather_object(list(v))) for k, v in values.items()}

    def broadcast(self, obj: Any) -> Any:
        """The main process's value of `obj`, on every process."""
        if self.world == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([obj], from_process=0)[0]

    def all_finite(self, finite: bool) -> bool:
        if self.world == 1:
            return finite
        from accelerate.utils import reduce

        return bool(reduce(torch.tensor(float(not finite), device=self.device), reduction="sum").item() == 0)

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()
