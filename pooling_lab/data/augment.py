"""Whole-batch augmentation of uint8 images with tensor ops: one random draw per image, no loops."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(
    images: torch.Tensor, padding: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Each image cropped back to its size from itself zero-padded by ``padding`` on every side.

    The batch is padded once; every image's window is gathered with its own row and column indices.
    """
    batch, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    top, left = torch.randint(
        0, 2 * padding + 1, (2, batch, 1), generator=generator, device=device
    ).unbind(0)
    rows = top + torch.arange(height, device=device)  # (B, H)
    cols = left + torch.arange(width, device=device)  # (B, W)
    return padded[
        torch.arange(batch, device=device)[:, None, None, None],
        torch.arange(channels, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def random_flip(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2."""
    flip = torch.rand(len(images), generator=generator, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)
