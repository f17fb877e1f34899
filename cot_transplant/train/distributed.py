"""Data parallelism through Accelerate: `accelerate launch -m cot_transplant train CONFIG`.

Accelerate starts the processes and the process group (gloo on CPU, NCCL on GPUs). Each
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


class Dist:
    """The process layout: rank, world size, and the few collective operations the loop needs."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = 0
        self.state = None
        if self.world > 1:
            from accelerate import PartialState

            self.state = PartialState()
            self.rank, self.world = self.state.process_index, self.state.num_processes

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

        return bool(reduce(torch.tensor(float(not finite)), reduction="sum").item() == 0)

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()
