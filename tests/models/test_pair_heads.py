"""Pair-loss heads against hand computations (Python floats, pair by pair, in float64), and what
happens without pytorch-metric-learning."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError

from pooling_lab.errors import UserError
from pooling_lab.models.heads import HEADS, build_head

pytest.importorskip("pytorch_metric_learning")

D, C = 6, 3
PAIR_HEADS = ["contrastive", "triplet", "multi_similarity"]


def batch(seed: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of four, spread from tight to loose: distances from near 0 to near 2."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(C).repeat_interleave(4)
    centres = torch.randn(C, D, generator=g, dtype=torch.float64)
    spread = torch.tensor([0.02, 0.02, 1.0, 3.0], dtype=torch.float64).repeat(C)[:, None]
    x = centres[labels] + spread * torch.randn(len(labels), D, generator=g, dtype=torch.float64)
    return x, labels


def unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(a * a for a in v))
    return [a / norm for a in v]


def hand_distances(x: torch.Tensor) -> list[list[float]]:
    rows = [unit(v) for v in x.tolist()]
    return [[math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v, strict=True))) for v in rows] for u in rows]


def mean_of_nonzero(terms: list[float]) -> float:
    kept = [t for t in terms if t > 0]
    return sum(kept) / len(kept) if kept else 0.0


def ordered_pairs(labels: torch.Tensor, same: bool) -> list[tuple[int, int]]:
    ys = labels.tolist()
    return [(i, j) for i, j in itertools.permutations(range(len(ys)), 2) if (ys[i] == ys[j]) == same]


def hand_contrastive(x, labels, pos_margin, neg_margin) -> tuple[float, list[float], list[float]]:
    d = hand_distances(x)
    pos = [max(0.0, d[i][j] - pos_margin) for i, j in ordered_pairs(labels, same=True)]
    neg = [max(0.0, neg_margin - d[i][j]) for i, j in ordered_pairs(labels, same=False)]
    return mean_of_nonzero(pos) + mean_of_nonzero(neg), pos, neg


def hand_triplet(x, labels, margin) -> tuple[float, list[float]]:
    d, ys = hand_distances(x), labels.tolist()
    terms = [max(0.0, d[a][p] - d[a][n] + margin)
             for a, p in ordered_pairs(labels, same=True) for n in range(len(ys)) if ys[n] != ys[a]]
    return mean_of_nonzero(terms), terms


def hand_multi_similarity(x, labels, alpha, beta, base) -> float:
    rows, ys = [unit(v) for v in x.tolist()], labels.tolist()
    total = 0.0
    for i, u in enumerate(rows):
        sim = [sum(a * b for a, b in zip(u, v, strict=True)) for v in rows]
        pos = sum(math.exp(-alpha * (sim[j] - base)) for j in range(len(ys)) if j != i and ys[j] == ys[i])
        neg = sum(math.exp(beta * (sim[j] - base)) for j in range(len(ys)) if ys[j] != ys[i])
        total += math.log(1 + pos) / alpha + math.log(1 + neg) / beta
    return total / len(ys)


def loss_of(name: str, x: torch.Tensor, labels: torch.Tensor, **options) -> torch.Tensor:
    head = build_head(name, in_features=D, num_classes=C, **options)
    return head.loss(head(x, labels), labels)


@pytest.mark.parametrize(("pos_margin", "neg_margin"), [(0.0, 0.7), (0.2, 0.85), (0.5, 1.5)])
def test_contrastive_matches_hand_computation(pos_margin, neg_margin):
    x, labels = batch()
    expected, pos, neg = hand_contrastive(x, labels, pos_margin, neg_margin)
    if pos_margin > 0:  # the mean is over the non-zero terms only: some of each kind
        assert 0 in pos and any(pos)
    assert 0 in neg and any(neg)
    assert loss_of("contrastive", x, labels, pos_margin=pos_margin, neg_margin=neg_margin).item() == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("margin", [0.05, 0.1, 0.5])
def test_triplet_matches_hand_computation(margin):
    x, labels = batch()
    expected, terms = hand_triplet(x, labels, margin)
    assert 0 in terms and any(terms)
    assert loss_of("triplet", x, labels, margin=margin).item() == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize(("alpha", "beta", "base"), [(2.0, 50.0, 0.5), (1.0, 10.0, 0.0), (4.0, 20.0, 0.8)])
def test_multi_similarity_matches_hand_computation(alpha, beta, base):
    x, labels = batch(7)
    expected = hand_multi_similarity(x, labels, alpha, beta, base)
    got = loss_of("multi_similarity", x, labels, alpha=alpha, beta=beta, base=base).item()
    assert got == pytest.approx(expected, rel=1e-10)


def test_defaults_are_the_papers_and_the_library_s():
    defaults = {name: HEADS.get(name).spec_model().model_dump(exclude={"name"}) for name in PAIR_HEADS}
    assert defaults == {
        "contrastive": {"pos_margin": 0.0, "neg_margin": 0.7},
        "triplet": {"margin": 0.1},
        "multi_similarity": {"alpha": 2.0, "beta": 50.0, "base": 0.5},
    }


@pytest.mark.parametrize("name", PAIR_HEADS)
def test_pair_heads_have_no_classifier_and_return_unit_embeddings(name):
    head = build_head(name, in_features=D, num_classes=C)
    x, labels = batch()
    x = x.float().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = head(x, labels)
        loss = head.loss(scores, labels)
    assert not head.classifies and list(head.parameters()) == [] and head.state_dict() == {}
    assert scores.dtype == loss.dtype == torch.float32
    torch.testing.assert_close(scores.norm(dim=1), torch.ones(len(x)))
    torch.testing.assert_close(head(x), scores)  # labels change nothing
    loss.backward()
    assert loss > 0 and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("contrastive", {"pos_margin": 0.8, "neg_margin": 0.7}),
        ("contrastive", {"neg_margin": 2.5}),
        ("triplet", {"margin": -0.1}),
        ("multi_similarity", {"alpha": 0.0}),
        ("multi_similarity", {"base": 1.5}),
        ("triplet", {"scale": 2.0}),
    ],
)
def test_bad_options_are_rejected(name, options):
    with pytest.raises((ValidationError, ValueError)):
        build_head(name, in_features=D, num_classes=C, **options)


def test_options_show_in_the_repr():
    text = repr(build_head("contrastive", in_features=D, num_classes=C, neg_margin=0.85))
    assert "pos_margin=0.0, neg_margin=0.85" in text and "ContrastiveLoss" in text


def test_without_the_library_building_a_pair_head_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_metric_learning", None)  # import fails as if absent
    with pytest.raises(UserError, match=r"need pytorch-metric-learning.*pip install pooling-lab\[metric\]"):
        build_head("triplet", in_features=D, num_classes=C)
    assert build_head("arcface", in_features=D, num_classes=C).classifies


def test_without_the_library_the_core_imports_and_lists_the_pair_heads():
    code = (
        "import sys; sys.modules['pytorch_metric_learning'] = None\n"
        "from typer.testing import CliRunner\n"
        "from pooling_lab.cli import app\n"
        "import pooling_lab.train.loop, pooling_lab.experiment\n"
        "result = CliRunner().invoke(app, ['list', 'heads'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(result.output)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"COLUMNS": "200"}, check=False)
    assert done.returncode == 0, done.stderr
    assert "pytorch_metric_learning" not in done.stderr
    for name in ("contrastive", "triplet", "multi_similarity"):
        assert name in done.stdout
