"""Whole-batch augmentation of uint8 images with tensor ops: one random draw per image, no loops."""

from __future__ import annotations

import math

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
        top, left = torch.randint(
            0, 2 * padding + 1, (2, batch), generator=generator, device=device
        )
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


def random_resized_crop(
    images: torch.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flip: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """From each float image (B, C, H, W) a random box resampled bilinearly to H x W, mirrored
    left-right with probability 1/2 (when ``flip``).

    Per image: an area fraction a ~ U(scale) and an aspect ratio r (box width / box height)
    drawn log-uniformly from ``ratio`` give the box sides, as fractions of the image sides,
    sqrt(a r H / W) and sqrt(a W / (r H)); a side longer than the image is cut to it (where
    torchvision redraws, then falls back to a centre crop; only extreme draws differ).  The box
    lies uniformly at random inside the image.  Box and mirror are one affine map per image, so
    the whole batch is one ``affine_grid`` and one ``grid_sample``.
    """
    batch, _, height, width = images.shape
    draws = torch.rand(batch, 5, generator=generator, device=images.device)
    area = scale[0] + (scale[1] - scale[0]) * draws[:, 0]
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * draws[:, 1])
    box_width = torch.sqrt(area * aspect * height / width).clamp(max=1.0)
    box_height = torch.sqrt(area / aspect * width / height).clamp(max=1.0)
    # In grid_sample's coordinates the image spans [-1, 1], so a box of side fraction f
    # has half-side f and its centre lies in [-(1 - f), 1 - f].
    theta = torch.zeros(batch, 2, 3, device=images.device)
    theta[:, 0, 0] = torch.where(draws[:, 4] < 0.5, -box_width, box_width) if flip else box_width
    theta[:, 0, 2] = (1 - box_width) * (2 * draws[:, 2] - 1)
    theta[:, 1, 1] = box_height
    theta[:, 1, 2] = (1 - box_height) * (2 * draws[:, 3] - 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
