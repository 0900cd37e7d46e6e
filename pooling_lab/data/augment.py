"""Whole-batch augmentation of uint8 images with tensor ops: one random draw per image, no loops."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_and_flip(
    images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """Each image cropped back to its size from itself zero-padded by ``padding`` on every side
    (a random offset per image), then mirrored left-right with probability 1/2 (when ``flip``).

    Both are one ``gather`` over the flattened padded batch: an image's window is its start
    offset plus the flat offsets of the window's pixels, whose columns run backwards when the
    image is flipped.  This is several times faster than indexing with broadcast index tensors
    or than a separate ``torch.where`` for the flip.
    """
    batch, channels, height, width = images.shape
    device = images.device
    if padding:
        images = F.pad(images, (padding, padding, padding, padding))
        top, left = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator, device=device)
        start = top * (width + 2 * padding) + left  # (B,)
    else:
        start = torch.zeros(batch, dtype=torch.long, device=device)
    columns = torch.arange(width, device=device).expand(batch, width)  # (B, W)
    if flip:
        mirrored = torch.rand(batch, generator=generator, device=device) < 0.5
        columns = torch.where(mirrored[:, None], columns.flip(1), columns)
    rows = torch.arange(height, device=device) * (width + 2 * padding)  # (H,)
    index = start[:, None, None] + rows[None, :, None] + columns[:, None, :]  # (B, H, W)
    index = index.view(batch, 1, height * width).expand(batch, channels, height * width)
    return images.flatten(2).gather(2, index).view(batch, channels, height, width)
