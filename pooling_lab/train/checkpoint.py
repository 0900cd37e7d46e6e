"""checkpoint.pt: everything a run's future depends on, read back only when it belongs to the
same run and has the current layout (an older layout restarts the run)."""

from __future__ import annotations

from typing import Any

import torch

from pooling_lab import atomic
from pooling_lab.results import RunFiles

CHECKPOINT_LAYOUT = 2  # raise when the checkpoint's contents change


def save_checkpoint(files: RunFiles, state: dict[str, Any]) -> None:
    atomic.save_torch(files.checkpoint, {"layout": CHECKPOINT_LAYOUT, **state})


def load_checkpoint(files: RunFiles, run_id: str) -> dict[str, Any] | None:
    """The run's checkpoint, or None when there is none for this run and layout.  Loaded on the
    CPU: RNG states must stay there; the rest is copied to where it lives on loading."""
    if not files.checkpoint.exists():
        return None
    state = torch.load(files.checkpoint, map_location="cpu", weights_only=False)
    if state.get("run_id") != run_id or state.get("layout") != CHECKPOINT_LAYOUT:
        return None
    return state
