"""M-per-class batches for the tensor loader (``train.batch_sampler: {m_per_class: M}``): every
batch holds M images of each of K = batch_size / M classes, so a pair loss finds positives in it.

An epoch keeps the loader's length, floor(N / batch_size) batches.  Each class's images are taken
M at a time in a random order redrawn every epoch.  A batch takes the K classes whose images have
been drawn least so far, as a fraction of the class's size (ties broken at random), so classes
are drawn in proportion to their size: with balanced classes whose size M divides, no image is
drawn twice in an epoch and only the epoch's remainder of fewer than batch_size images is left
out.  Otherwise a class can wrap around its order and repeat at most about M of its images in
an epoch (and a class holding over 1/K of the data, drawn at most once a batch, falls behind).

All randomness comes from the loader's generator, on the device, at the start of the epoch, so
a resumed epoch draws the same batches.
"""

from __future__ import annotations

import torch

from pooling_lab.errors import UserError

FIELD = "train.batch_sampler.m_per_class"


class MPerClassOrder:
    """The epochs' image order of one training split; refuses batches the split cannot fill."""

    def __init__(self, labels: torch.Tensor, batch_size: int, m_per_class: int):
        counts = torch.bincount(labels).cpu()
        present = counts > 0
        classes_per_batch, rest = divmod(batch_size, m_per_class)
        if rest:
            raise UserError(f"{m_per_class} does not divide train.batch_size {batch_size}", field=FIELD)
        if classes_per_batch > int(present.sum()):
            raise UserError(
                f"batches of {batch_size} hold {classes_per_batch} classes of {m_per_class} images, but the training "
                f"split has {int(present.sum())} classes: raise m_per_class or lower train.batch_size", field=FIELD,
            )
        small = torch.nonzero(present & (counts < m_per_class)).flatten().tolist()
        if small:
            raise UserError(
                f"class {small[0]} has {int(counts[small[0]])} training images, fewer than m_per_class = {m_per_class}",
                field=FIELD,
            )
        self.labels = labels
        self.counts = counts.to(labels.device)
        self.starts = self.counts.cumsum(0) - self.counts
        self.groups = self.counts / m_per_class  # a class's size in draws of M images
        self.absent = ~present.to(labels.device)
        self.batches = len(labels) // batch_size
        self.classes_per_batch = classes_per_batch
        self.m_per_class = m_per_class

    def __call__(self, generator: torch.Generator | None) -> torch.Tensor:
        """One epoch: indices into the split, batch after batch (batches * batch_size)."""
        device = self.labels.device
        shuffled = torch.randperm(len(self.labels), generator=generator, device=device)
        by_class = shuffled[self.labels[shuffled].sort(stable=True).indices]  # classes in turn, each shuffled
        jitter = torch.rand(self.batches, len(self.counts), generator=generator, device=device)
        drawn = torch.zeros(len(self.counts), device=device)  # draws of each class so far
        classes, draw_numbers = [], []
        for batch in range(self.batches):
            behind = ((drawn + jitter[batch]) / self.groups).masked_fill(self.absent, torch.inf)
            chosen = behind.topk(self.classes_per_batch, largest=False).indices
            classes.append(chosen)
            draw_numbers.append(drawn[chosen].long())
            drawn[chosen] += 1
        chosen, number = torch.stack(classes), torch.stack(draw_numbers)  # (batches, classes_per_batch)
        within = number[..., None] * self.m_per_class + torch.arange(self.m_per_class, device=device)
        positions = self.starts[chosen][..., None] + within % self.counts[chosen][..., None]
        return by_class[positions].flatten()
