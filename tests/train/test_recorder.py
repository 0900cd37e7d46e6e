"""ParamRecorder rows against values set by hand and numpy's statistics of them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pooling_lab.experiment import ExperimentConfig
from pooling_lab.models import build_model
from pooling_lab.train.recorder import VECTOR_STATS, ParamRecorder

CPU = torch.device("cpu")
COLUMNS = ["step", "epoch", "module", "param", "stat", "value", "grad"]


def make_model(pool: dict):
    config = ExperimentConfig.model_validate({
        "name": "recorder",
        "data": {"dataset": "synthetic"},
        "model": {"backbone": {"name": "small_cnn", "width": 4, "depth": 2}, "pool": pool},
    })
    return build_model(config, in_channels=1, num_classes=3)


def set_p(model, values, grad) -> None:
    p = model.pool.p
    with torch.no_grad():
        p.copy_(torch.as_tensor(values, dtype=p.dtype))
    p.grad = torch.as_tensor(grad, dtype=p.dtype).clone()


def numpy_stats(a: np.ndarray) -> list[float]:
    """mean, std (ddof=0), min, q05..q95 (numpy's default linear method), max."""
    quantiles = np.quantile(a, [0.05, 0.25, 0.5, 0.75, 0.95])
    return [a.mean(), a.std(ddof=0), a.min(), *quantiles, a.max()]


def test_shared_p_is_one_value_row_per_capture():
    model = make_model({"name": "gem", "mode": "shared"})
    recorder = ParamRecorder(model, CPU)
    assert recorder.active
    set_p(model, [2.5], [0.125])
    recorder.capture(10, 0.5)
    set_p(model, [2.75], [-0.5])
    recorder.capture(20, 1.0)
    frame = recorder.drain()
    assert list(frame.columns) == COLUMNS
    assert frame[["step", "epoch", "module", "param", "stat"]].values.tolist() == [
        [10, 0.5, "pool", "p", "value"],
        [20, 1.0, "pool", "p", "value"],
    ]
    assert frame["value"].tolist() == [2.5, 2.75]
    assert frame["grad"].tolist() == [0.125, -0.5]
    assert recorder.drain().empty


def test_capture_without_grad_records_nan():
    model = make_model({"name": "gem"})
    recorder = ParamRecorder(model, CPU)
    set_p(model, [3.5], [1.0])
    recorder.capture(0, 0.0, with_grad=False)
    model.pool.p.grad = None
    recorder.capture(1, 0.1)
    frame = recorder.drain()
    assert frame["value"].tolist() == [3.5, 3.5]
    assert frame["grad"].isna().all()


def test_per_channel_p_is_summarised_like_numpy():
    model = make_model({"name": "gem", "mode": "per_channel"})
    channels = model.backbone.out_channels
    generator = np.random.default_rng(0)
    values = generator.uniform(1.0, 6.0, channels).astype(np.float32)
    grads = generator.normal(0.0, 0.01, channels).astype(np.float32)
    recorder = ParamRecorder(model, CPU)
    set_p(model, values, grads)
    recorder.capture(7, 0.25)
    frame = recorder.drain()
    assert frame["stat"].tolist() == list(VECTOR_STATS)
    assert (frame["step"] == 7).all() and (frame["param"] == "p").all() and (frame["module"] == "pool").all()
    np.testing.assert_allclose(frame["value"], numpy_stats(values.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(frame["grad"], numpy_stats(grads.astype(np.float64)), rtol=1e-5, atol=1e-9)


def test_quantiles_interpolate_linearly():
    """Eight channels 1..8: q05 = 1 + 0.05 * 7 = 1.35, q25 = 2.75, q50 = 4.5 (by hand)."""
    model = make_model({"name": "gem", "mode": "per_channel"})
    assert model.backbone.out_channels == 8
    recorder = ParamRecorder(model, CPU)
    set_p(model, np.arange(1.0, 9.0), np.zeros(8))
    recorder.capture(1, 1.0)
    row = dict(zip(VECTOR_STATS, recorder.drain()["value"], strict=True))
    assert row["mean"] == pytest.approx(4.5)
    assert row["std"] == pytest.approx((21 / 4) ** 0.5)  # population variance of 1..8 is 63/12
    assert (row["min"], row["max"]) == (1.0, 8.0)
    assert [row["q05"], row["q25"], row["q50"], row["q75"], row["q95"]] == pytest.approx(
        [1.35, 2.75, 4.5, 6.25, 7.65]
    )


def test_capacity_overflow_keeps_every_row_in_order():
    model = make_model({"name": "gem"})
    recorder = ParamRecorder(model, CPU, capacity=3)
    for step in range(1, 9):
        set_p(model, [1.0 + step / 4], [step / 8])
        recorder.capture(step, step / 4)
    frame = recorder.drain()
    assert frame["step"].tolist() == list(range(1, 9))
    assert frame["epoch"].tolist() == [step / 4 for step in range(1, 9)]
    assert frame["value"].tolist() == [1.0 + step / 4 for step in range(1, 9)]
    assert frame["grad"].tolist() == [step / 8 for step in range(1, 9)]
    assert len(frame.index.unique()) == 8


@pytest.mark.parametrize("pool", [{"name": "avg"}, {"name": "max"}, {"name": "gem", "learnable": False}])
def test_no_learnable_pool_parameters_records_nothing(pool):
    recorder = ParamRecorder(make_model(pool), CPU)
    assert not recorder.active
    recorder.capture(1, 0.1)
    frame = recorder.drain()
    assert frame.empty and list(frame.columns) == COLUMNS
