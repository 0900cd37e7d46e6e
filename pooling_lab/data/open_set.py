"""The open-set class split: a data set's classes divided into those the model trains on (seen)
and those it never sees, on which retrieval and the test-time p probe are measured (unseen)."""

from __future__ import annotations

import torch

from pooling_lab.data.spec import OpenSetConfig
from pooling_lab.data.splits import Source, Split
from pooling_lab.errors import UserError

MIN_CLASSES = 2  # on each side: a head needs two classes, retrieval needs two to rank against


def split_classes(source: Source, open_set: OpenSetConfig) -> tuple[Source, Source]:
    """(seen, unseen): the source's official train and test splits restricted to each side.

    Labels are renumbered in their original order, the seen classes to 0..S-1 (the head's
    classes) and the unseen ones to S..C-1, so no image of one side shares a label with the
    other."""
    count = len(source.class_names)
    unseen = open_set.unseen_labels(count)
    outside = [label for label in unseen if label >= count]
    if outside:
        raise UserError(f"class {outside[0]} does not exist: the data set has classes 0..{count - 1}",
                        field=open_set.labels_field)
    seen = [label for label in range(count) if label not in set(unseen)]
    if len(seen) < MIN_CLASSES:
        raise UserError(f"{len(unseen)} unseen classes leave {len(seen)} of the {count} to train on; "
                        f"at least {MIN_CLASSES} are needed", field=open_set.labels_field)
    renumbered = torch.empty(count, dtype=torch.int64)
    renumbered[seen + unseen] = torch.arange(count)

    def side(labels: list[int]) -> Source:
        names = [source.class_names[label] for label in labels]
        return Source(_restricted(source.train, labels, renumbered), _restricted(source.test, labels, renumbered), names)

    return side(seen), side(unseen)


def _restricted(split: Split, labels: list[int], renumbered: torch.Tensor) -> Split:
    """The images of ``split`` whose class is one of ``labels``, in their order, renumbered."""
    keep = torch.isin(split.labels, torch.tensor(labels)).nonzero().squeeze(1)
    return Split(split.images[keep].contiguous(), renumbered[split.labels[keep]])
