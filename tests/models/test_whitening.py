"""The GeM paper's learned whitening end to end: pool -> L2 -> linear with bias -> L2 (the last
L2 in the head and the retrieval metrics), as ``model.normalize_pooled`` with
``model.embedding_norm: false``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from pooling_lab.experiment import ExperimentConfig, run_id_of
from pooling_lab.models import build_model


def config(**model) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "name": "whitening",
        "data": {"dataset": "synthetic"},
        "model": {"backbone": {"name": "small_cnn", "width": 4, "depth": 2}, **model},
        "head": {"name": "cosine"},
    })


def test_the_projection_sees_the_l2_normalised_descriptor():
    model = build_model(config(embedding_dim=6, embedding_norm=False, normalize_pooled=True), 1, 4).eval()
    images = torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pooled = model.pool(model.backbone(images)).double().numpy()
        embedded = model.embed(images).double().numpy()
    weight = model.embedding.linear.weight.detach().double().numpy()
    bias = model.embedding.linear.bias.detach().double().numpy()
    unit = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(embedded, unit @ weight.T + bias, atol=1e-6)
    assert np.abs(np.linalg.norm(pooled, axis=1) - 1).max() > 0.1  # the normalisation mattered


def test_without_the_option_the_projection_sees_the_raw_descriptor():
    model = build_model(config(embedding_dim=6, embedding_norm=False), 1, 4).eval()
    images = torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.embedding.linear(model.pool(model.backbone(images)))
        assert torch.equal(model.embed(images), expected)
    assert "normalize_input=False" in repr(model.embedding)


def test_the_option_needs_a_projection():
    with pytest.raises(ValidationError, match="normalize_pooled normalises the projection's input: set embedding_dim"):
        config(normalize_pooled=True)


def test_run_ids_change_only_when_the_option_is_set():
    plain = config(embedding_dim=6, embedding_norm=False)
    assert "normalize_pooled" not in plain.model_dump(mode="json")["model"]
    assert run_id_of(config(embedding_dim=6, embedding_norm=False, normalize_pooled=False)) == run_id_of(plain)
    assert run_id_of(config(embedding_dim=6, embedding_norm=False, normalize_pooled=True)) != run_id_of(plain)
