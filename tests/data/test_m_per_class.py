"""M-per-class batches of the tensor loader: M images of each of batch_size / M classes in every
batch, classes drawn in proportion to their size, every image about once an epoch, all from the
seeded generator."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from pooling_lab.data.loader import BatchLoader
from pooling_lab.data.splits import Split
from pooling_lab.errors import UserError


def split_of(sizes: list[int], seed: int = 0) -> Split:
    """Classes of the given sizes, shuffled; image i holds the number i in its first pixel pair."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))[torch.randperm(sum(sizes), generator=g)]
    ids = torch.arange(len(labels))
    images = torch.zeros(len(labels), 1, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = ids // 256, ids % 256
    return Split(images, labels)


def loader(split: Split, batch_size: int, m: int, seed: int = 0) -> BatchLoader:
    return BatchLoader(split, batch_size, device=torch.device("cpu"), mean=[0.0], std=[1.0], shuffle=True,
                       drop_last=True, generator=torch.Generator().manual_seed(seed), m_per_class=m)


def epoch(batches: BatchLoader) -> list[tuple[list[int], list[int]]]:
    """(image ids, labels) of each batch of one epoch."""
    drawn = []
    for images, labels in batches:
        pixels = (images[:, 0, 0, :2] * 255).round().long()  # the loader scales pixels by 1 / 255
        drawn.append(((pixels[:, 0] * 256 + pixels[:, 1]).tolist(), labels.tolist()))
    return drawn


def test_every_batch_holds_m_images_of_each_of_its_classes():
    split = split_of([30, 26, 40, 17, 24, 33])
    batches = loader(split, batch_size=12, m=4)
    assert len(batches) == len(split) // 12
    for _ in range(3):
        drawn = epoch(batches)
        assert len(drawn) == len(batches)
        for ids, labels in drawn:
            assert sorted(Counter(labels).values()) == [4, 4, 4]
            assert len(set(ids)) == 12  # no image twice in a batch
            assert [split.labels[i].item() for i in ids] == labels


def test_balanced_classes_draw_every_image_once_an_epoch():
    """6 classes of 24, M = 4, batches of 12: 12 batches hold each of the 144 images once."""
    split = split_of([24] * 6)
    batches = loader(split, batch_size=12, m=4)
    seen = []
    for _ in range(2):
        ids = [i for batch_ids, _ in epoch(batches) for i in batch_ids]
        assert sorted(ids) == list(range(144))
        seen.append(ids)
    assert seen[0] != seen[1]  # a new order every epoch


def test_classes_are_drawn_in_proportion_to_their_size():
    sizes = [80, 40, 40, 20, 20, 12]
    split = split_of(sizes)
    batches = loader(split, batch_size=8, m=4)  # two classes a batch, 26 batches
    drawn = Counter(label for _, labels in epoch(batches) for label in labels)
    total = len(batches) * 8
    for label, size in enumerate(sizes):
        assert abs(drawn[label] - total * size / sum(sizes)) <= 4 + 1e-9  # within one draw of M
    ids = [i for batch_ids, _ in epoch(batches) for i in batch_ids]
    repeats = Counter(Counter(ids).values())
    assert set(repeats) <= {1, 2} and repeats[2] <= 4 * len(sizes)  # at most about M repeats a class


def test_the_same_seed_draws_the_same_batches_and_another_seed_others():
    split = split_of([30, 26, 40, 17, 24, 33])
    first, again, other = (epoch(loader(split, 12, 4, seed)) for seed in (5, 5, 6))
    assert first == again and first != other


def test_augmentation_draws_follow_the_sampler_in_the_same_stream():
    """The resume replays an epoch from its starting generator state: the batches and the
    generator afterwards are the same as the first time."""
    split = split_of([24] * 6)
    generator = torch.Generator().manual_seed(3)
    batches = BatchLoader(split, 12, device=torch.device("cpu"), mean=[0.0], std=[1.0], shuffle=True, drop_last=True,
                          generator=generator, m_per_class=4)
    start = generator.get_state()
    first = [(x.clone(), y.clone()) for x, y in batches]
    after = generator.get_state()
    generator.set_state(start)
    replay = list(batches)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, replay, strict=True))
    assert torch.equal(generator.get_state(), after)


@pytest.mark.parametrize(
    ("sizes", "batch_size", "m", "message"),
    [
        ([24] * 6, 12, 5, "5 does not divide train.batch_size 12"),
        ([24] * 3, 16, 4, "batches of 16 hold 4 classes of 4 images, but the training split has 3 classes"),
        ([24, 24, 3, 24], 8, 4, "class 2 has 3 training images, fewer than m_per_class = 4"),
    ],
)
def test_batches_the_data_cannot_fill_are_refused(sizes, batch_size, m, message):
    with pytest.raises(UserError, match=message) as caught:
        loader(split_of(sizes), batch_size, m)
    assert caught.value.field == "train.batch_sampler.m_per_class"


def test_absent_classes_are_never_drawn():
    split = split_of([24, 0, 24, 24])
    labels = {label for _, batch_labels in epoch(loader(split, 8, 4)) for label in batch_labels}
    assert labels == {0, 2, 3}
