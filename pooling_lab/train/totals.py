"""What an epoch of training sums on the device, read on the host at epoch ends and saved in
checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from pooling_lab.train.distributed import SINGLE, World


@dataclass
class EpochTotals:
    """What an epoch sums on the device: loss times batch size, hits, images and skipped updates
    (a skipped update's loss and hits do not count)."""

    loss: torch.Tensor
    hits: torch.Tensor
    seen: torch.Tensor
    skipped: torch.Tensor

    @classmethod
    def zeros(cls, device: torch.device) -> EpochTotals:
        return cls(*(torch.zeros((), device=device, dtype=dtype) for dtype in (torch.float32, torch.long, torch.long, torch.long)))

    def add(self, loss: torch.Tensor, hits: torch.Tensor, count: int, applied: torch.Tensor | None) -> None:
        weight: int | torch.Tensor = count
        if applied is not None:
            loss, hits, weight = torch.where(applied, loss, 0.0), torch.where(applied, hits, 0), applied.long() * count
            self.skipped += ~applied
        self.loss += loss * weight
        self.hits += hits
        self.seen += weight

    def summed(self, world: World) -> EpochTotals:
        """The sums over every rank's share (``skipped`` is the same on every rank)."""
        if not world.distributed:
            return self
        loss, hits, seen = (value.clone() for value in (self.loss, self.hits, self.seen))
        world.sum_([loss, hits, seen])
        return replace(self, loss=loss, hits=hits, seen=seen)

    def for_rank(self, world: World) -> EpochTotals:
        """Sums read from a checkpoint (which holds ``summed``) as this rank continues them."""
        if world.is_main:
            return self
        return replace(self, loss=torch.zeros_like(self.loss), hits=torch.zeros_like(self.hits), seen=torch.zeros_like(self.seen))

    def read(self, world: World = SINGLE) -> tuple[float, float, int]:
        """Mean loss, accuracy and the number of skipped updates (one host read)."""
        totals = self.summed(world)
        values = [totals.loss.double(), totals.hits.double(), totals.seen.double(), totals.skipped.double()]
        loss, hits, seen, skipped = torch.stack(values).tolist()
        return loss / max(seen, 1), hits / max(seen, 1), int(skipped)
