"""Heads against hand computations: ``math`` on Python floats, element by element, in float64."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from pydantic import ValidationError

from pooling_lab.models.heads import HEADS, ArcFaceHead, CosineHead, build_head

D, C = 6, 5  # embedding width, number of classes
CLASSIFIERS = [name for name in HEADS.names() if HEADS.get(name).factory.classifies]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_head(name: str, dtype=torch.float64, seed: int = 0, **kwargs):
    head = build_head(name, in_features=D, num_classes=C, **kwargs).to(dtype)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=seeded(seed)))
    return head


def hand_cosines(x: torch.Tensor, w: torch.Tensor) -> list[list[float]]:
    def norm(v):
        return math.sqrt(sum(a * a for a in v))

    return [
        [
            sum(a * b for a, b in zip(xi, wj, strict=True)) / (norm(xi) * norm(wj))
            for wj in w.tolist()
        ]
        for xi in x.tolist()
    ]


def hand_target_cosines(x, w, labels) -> list[float]:
    return [row[y] for row, y in zip(hand_cosines(x, w), labels.tolist(), strict=True)]


def hand_angle(cos: float) -> float:
    return math.acos(min(1.0, max(-1.0, cos)))


def hand_arcface_target(cos: float, m: float, easy_margin: bool) -> float:
    theta = hand_angle(cos)
    if easy_margin:
        return math.cos(theta + m) if cos > 0 else cos
    return math.cos(theta + m) if theta + m <= math.pi else cos - m * math.sin(m)


def hand_logits(x, w, labels, scale, target_fn) -> torch.Tensor:
    rows = hand_cosines(x, w)
    for row, y in zip(rows, labels.tolist(), strict=True):
        row[y] = target_fn(row[y])
    return scale * torch.tensor(rows, dtype=torch.float64)


def mixed_batch(w: torch.Tensor, n: int = 12, seed: int = 1):
    """Random embeddings plus rows nearly anti-parallel / parallel to their class weight."""
    g = seeded(seed)
    labels = torch.randint(0, C, (n,), generator=g)
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    noise = 0.05 * torch.randn(n, D, generator=g, dtype=torch.float64)
    w = w.detach().double()
    x[:3] = -w[labels[:3]] + noise[:3]  # theta_y close to pi: theta_y + 0.5 > pi
    x[3:5] = 2 * w[labels[3:5]] + noise[3:5]  # theta_y close to 0
    return x, labels


def test_every_classifier_head_has_class_weights_and_float_logits():
    assert set(CLASSIFIERS) == {"linear", "cosine", "arcface", "cosface", "subcenter_arcface", "curricularface"}
    x = torch.randn(4, D)
    labels = torch.tensor([0, 1, 2, 3])
    for name in CLASSIFIERS:
        head = build_head(name, in_features=D, num_classes=C)
        assert isinstance(head.weight, torch.nn.Parameter)
        assert head.weight.shape == (C * getattr(head, "centers", 1), D)
        for logits in (head(x), head(x, labels)):
            assert logits.shape == (4, C) and logits.dtype == torch.float32


def test_unknown_head_lists_known_names():
    with pytest.raises(KeyError, match="arcface.*cosface"):
        build_head("sphereface", in_features=D, num_classes=C)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("cosine", {"scale": -1.0}),
        ("arcface", {"scale": 0.0}),
        ("arcface", {"margin": math.pi}),
        ("arcface", {"margin": -0.1}),
        ("cosface", {"margin": -0.1}),
        ("linear", {"label_smoothing": 1.0}),
        ("linear", {"scale": 2.0}),
        ("arcface", {"marign": 0.3}),
    ],
)
def test_bad_options_are_rejected(name, kwargs):
    with pytest.raises(ValidationError):
        build_head(name, in_features=D, num_classes=C, **kwargs)


def test_options_reach_the_module_as_plain_floats():
    head = build_head("arcface", in_features=D, num_classes=C, scale=64, margin=0.2)
    assert (head.scale, head.margin) == (64.0, 0.2) and type(head.scale) is float
    text = repr(head)
    for part in ("in_features=6", "num_classes=5", "scale=64.0", "margin=0.2", "easy_margin=False"):
        assert part in text


@pytest.mark.parametrize("easy_margin", [False, True])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_arcface_matches_hand_computation(easy_margin, dtype, tol):
    scale, m = 30.0, 0.5
    head = make_head("arcface", dtype, scale=scale, margin=m, easy_margin=easy_margin)
    x, labels = mixed_batch(head.weight)
    target_cos = hand_target_cosines(x, head.weight, labels)
    if easy_margin:  # both sides of cos(theta_y) = 0
        assert any(c > 0 for c in target_cos) and any(c <= 0 for c in target_cos)
    else:  # both sides of theta_y + m = pi: the fallback is exercised
        angles = [hand_angle(c) for c in target_cos]
        assert any(a + m > math.pi for a in angles) and any(a + m < math.pi for a in angles)

    target = functools.partial(hand_arcface_target, m=m, easy_margin=easy_margin)
    expected = hand_logits(x, head.weight, labels, scale, target)
    plain = hand_logits(x, head.weight, labels, scale, lambda c: c)
    logits = head(x.to(dtype), labels)
    assert logits.dtype == dtype
    torch.testing.assert_close(logits.double(), expected, atol=tol, rtol=0)
    off_target = torch.ones(len(labels), C, dtype=torch.bool)
    off_target[torch.arange(len(labels)), labels] = False
    torch.testing.assert_close(logits.double()[off_target], plain[off_target], atol=tol, rtol=0)
    torch.testing.assert_close(head(x.to(dtype)).double(), plain, atol=tol, rtol=0)  # no labels


def test_cosface_matches_hand_computation():
    scale, m = 30.0, 0.35
    head = make_head("cosface", scale=scale, margin=m)
    x, labels = mixed_batch(head.weight)
    expected = hand_logits(x, head.weight, labels, scale, lambda c: c - m)
    torch.testing.assert_close(head(x, labels), expected, atol=1e-10, rtol=0)
    plain = hand_logits(x, head.weight, labels, scale, lambda c: c)
    torch.testing.assert_close(head(x), plain, atol=1e-10, rtol=0)


def test_arcface_with_zero_margin_is_exactly_the_cosine_head():
    cosine = make_head("cosine", torch.float32, scale=30.0)
    arcface = make_head("arcface", torch.float32, scale=30.0, margin=0.0)
    x, labels = mixed_batch(cosine.weight)
    x = x.float()
    x[5] = -cosine.weight[labels[5]].detach()  # exactly anti-parallel: the fallback boundary
    assert torch.equal(arcface(x, labels), cosine(x, labels))


@pytest.mark.parametrize("m", [0.1, 0.5, 1.0, 2.0])
def test_arcface_target_logit_decreases_with_the_angle(m):
    """Embedding (cos t, sin t) against class weight (1, 0): theta_y = t across [0, pi]."""
    head = ArcFaceHead(2, 2, scale=1.0, margin=m).double()
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
    t = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    x = torch.stack([t.cos(), t.sin()], dim=1)
    target = head(x, torch.zeros(len(t), dtype=torch.long))[:, 0]
    assert target[0].item() == pytest.approx(math.cos(m))
    assert (target.diff() < 0).all()


def test_margins_make_the_loss_larger():
    x = torch.randn(32, D, generator=seeded(3))
    labels = torch.randint(0, C, (32,), generator=seeded(4))
    cosine = make_head("cosine", torch.float32, scale=30.0)
    angles = [hand_angle(c) for c in hand_target_cosines(x, cosine.weight, labels)]
    assert max(angles) + 0.5 < math.pi  # the fallback is not hit
    plain_loss = cosine.loss(cosine(x, labels), labels)
    for m in (0.1, 0.3, 0.5):
        arcface = make_head("arcface", torch.float32, scale=30.0, margin=m)
        assert arcface.loss(arcface(x, labels), labels) > plain_loss


def test_last_target_angle_is_the_detached_mean_angle():
    head = make_head("arcface")
    assert head.last_target_angle is None
    x, labels = mixed_batch(head.weight)
    x.requires_grad_(True)
    head(x, labels)
    angles = [hand_angle(c) for c in hand_target_cosines(x.detach(), head.weight, labels)]
    angle = head.last_target_angle
    assert angle.shape == () and not angle.requires_grad
    assert angle.item() == pytest.approx(sum(angles) / len(angles), abs=1e-12)
    head(x[:2])  # an evaluation call leaves it as it was
    assert head.last_target_angle is angle


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("cosine", {}),
        ("arcface", {}),
        ("arcface", {"easy_margin": True}),
        ("arcface", {"margin": 0.0}),
        ("cosface", {}),
        ("subcenter_arcface", {}),
        ("curricularface", {}),
    ],
)
def test_gradients_are_finite_at_parallel_and_antiparallel_embeddings(name, kwargs, dtype):
    head = build_head(name, in_features=D, num_classes=C, **kwargs).to(dtype)
    with torch.no_grad():  # unit class weights e_j (every centre of class j): cosines come out exact
        head.weight.copy_(torch.eye(C, D).repeat_interleave(getattr(head, "centers", 1), dim=0))
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    sign = torch.tensor([3.0, -2.0, 1.0, -1.0, 5.0, -4.0], dtype=dtype)
    x = (sign[:, None] * torch.eye(C, D, dtype=dtype)[labels]).requires_grad_(True)
    unit_scale = CosineHead(D, C, scale=1.0).to(dtype)
    with torch.no_grad():
        unit_scale.weight.copy_(torch.eye(C, D))
    target_cos = unit_scale(x).gather(1, labels[:, None]).squeeze(1)
    assert target_cos.tolist() == sign.sign().tolist()  # exactly +-1: the kink of the angle

    loss = head.loss(head(x, labels), labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()


@pytest.mark.parametrize("easy_margin", [False, True])
def test_arcface_autograd_matches_finite_differences(easy_margin):
    head = make_head("arcface", margin=0.5, easy_margin=easy_margin)
    x, labels = mixed_batch(head.weight)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: head(e, labels), (x,))


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_autocast_bf16_computes_in_float32(name):
    head = make_head(name, torch.float32).eval()  # eval: curricularface's t stays as it is
    x = torch.randn(8, D, generator=seeded(5))
    labels = torch.randint(0, C, (8,), generator=seeded(6))
    reference = head(x, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        same_input = head(x, labels)
        bf16_input = head(x.bfloat16(), labels)
    assert same_input.dtype == bf16_input.dtype == torch.float32
    assert torch.equal(same_input, reference)
    atol = 0.03 * reference.abs().max().item()  # bf16 keeps 8 significant bits of the input
    torch.testing.assert_close(bf16_input, reference, atol=atol, rtol=0)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_logits_are_affine(bias):
    head = build_head("linear", in_features=D, num_classes=C, bias=bias)
    x = torch.randn(4, D, generator=seeded(7))
    expected = x.double() @ head.weight.double().T
    if bias:
        expected = expected + head.bias.double()
    else:
        assert head.bias is None and len(list(head.parameters())) == 1
    torch.testing.assert_close(head(x).double(), expected, atol=1e-6, rtol=0)


def test_linear_loss_uses_label_smoothing():
    eps = 0.2
    head = build_head("linear", in_features=D, num_classes=C, label_smoothing=eps)
    x = torch.randn(8, D, generator=seeded(8))
    labels = torch.randint(0, C, (8,), generator=seeded(9))
    logits = head(x, labels)

    total = 0.0
    for row, y in zip(logits.tolist(), labels.tolist(), strict=True):
        top = max(row)
        log_norm = top + math.log(sum(math.exp(v - top) for v in row))
        log_p = [v - log_norm for v in row]
        total += -(1 - eps) * log_p[y] - eps / C * sum(log_p)
    assert head.loss(logits, labels).item() == pytest.approx(total / len(labels), abs=1e-5)


# --- sub-center ArcFace -------------------------------------------------------------------------


def subcenter_weights(k: int, seed: int = 10) -> torch.Tensor:
    """k centres per class, each its class vector plus noise, in rows c * k ... (c + 1) * k - 1."""
    g = seeded(seed)
    base = torch.randn(C, D, generator=g, dtype=torch.float64)
    return base.repeat_interleave(k, dim=0) + 0.3 * torch.randn(C * k, D, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("easy_margin", [False, True])
def test_subcenter_arcface_matches_hand_computation(easy_margin):
    """cos to a class = the max over its centres (by hand, centre by centre), then ArcFace."""
    k, scale, m = 3, 30.0, 0.5
    head = build_head("subcenter_arcface", D, C, centers=k, scale=scale, margin=m, easy_margin=easy_margin).double()
    weights = subcenter_weights(k)
    with torch.no_grad():
        head.weight.copy_(weights)
    x, labels = mixed_batch(weights[::k])  # near (anti-)parallel to the first centre of its class
    per_centre = hand_cosines(x, weights)
    rows = [[max(row[c * k + j] for j in range(k)) for c in range(C)] for row in per_centre]
    nearest = [[max(range(k), key=lambda j, c=c: row[c * k + j]) for c in range(C)] for row in per_centre]
    assert len({j for row in nearest for j in row}) == k  # every centre wins somewhere
    target = [row[y] for row, y in zip(rows, labels.tolist(), strict=True)]
    assert any(hand_angle(c) + m > math.pi for c in target)  # the fallback is exercised
    expected = [list(row) for row in rows]
    for row, y in zip(expected, labels.tolist(), strict=True):
        row[y] = hand_arcface_target(row[y], m, easy_margin)

    torch.testing.assert_close(head(x, labels), scale * torch.tensor(expected, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(head(x), scale * torch.tensor(rows, dtype=torch.float64), atol=1e-10, rtol=0)


def test_subcenter_arcface_with_one_centre_is_exactly_arcface():
    arcface = make_head("arcface", torch.float32, margin=0.4)
    subcenter = make_head("subcenter_arcface", torch.float32, centers=1, margin=0.4)
    assert torch.equal(arcface.weight, subcenter.weight)
    x, labels = mixed_batch(arcface.weight)
    assert torch.equal(subcenter(x.float(), labels), arcface(x.float(), labels))


def test_subcenter_arcface_trains_only_the_nearest_centre():
    head = build_head("subcenter_arcface", D, C, centers=2).double()
    weights = subcenter_weights(2)
    with torch.no_grad():
        head.weight.copy_(weights)
    x = weights[[0]] + 0.01  # nearest to centre 0 of class 0, far from its centre 1
    head.loss(head(x, torch.tensor([0])), torch.tensor([0])).backward()
    assert head.weight.grad[0].abs().sum() > 0 and head.weight.grad[1].abs().sum() == 0


def test_subcenter_arcface_options():
    head = build_head("subcenter_arcface", D, C)
    assert head.centers == 3 and head.num_classes == C and "centers=3" in repr(head)
    with pytest.raises(ValidationError):
        build_head("subcenter_arcface", D, C, centers=0)


# --- CurricularFace -----------------------------------------------------------------------------


def hand_t_update(x, w, labels, t: float) -> float:
    """t <- 0.01 mean cos(theta_y) + 0.99 t."""
    target = hand_target_cosines(x, w, labels)
    return 0.01 * sum(target) / len(target) + 0.99 * t


def hand_curricular_logits(x, w, labels, scale, m, t):
    """The logits with the margin and a given t, and how many negatives were hard."""
    logits, hard = [], 0
    for row, y in zip(hand_cosines(x, w), labels.tolist(), strict=True):
        bar = math.cos(hand_angle(row[y]) + m)
        out = []
        for j, c in enumerate(row):
            if j == y:
                out.append(hand_arcface_target(c, m, easy_margin=False))
            elif c > bar:
                out.append(c * (t + c))
                hard += 1
            else:
                out.append(c)
        logits.append([scale * v for v in out])
    return torch.tensor(logits, dtype=torch.float64), hard


def curricular_batches():
    head = make_head("curricularface", margin=0.5)
    return head, [mixed_batch(head.weight, n=16, seed=seed) for seed in (11, 12, 13)]


def test_curricularface_matches_hand_computation_batch_after_batch():
    """Each training forward first moves t, then scores the hard negatives with the new t."""
    head, batches = curricular_batches()
    scale, m, t = 64.0, 0.5, 0.0
    assert head.t.item() == 0.0
    hard_total = 0
    for x, labels in batches:
        t = hand_t_update(x, head.weight, labels, t)
        expected, hard = hand_curricular_logits(x, head.weight, labels, scale, m, t)
        hard_total += hard
        torch.testing.assert_close(head(x, labels), expected, atol=1e-9, rtol=0)
        assert head.t.item() == pytest.approx(t, abs=1e-14)
    assert 0 < hard_total < 3 * 16 * (C - 1)  # some negatives are hard, some are not
    assert abs(t) > 1e-4  # t moved


def test_curricularface_t_moves_only_in_training_with_labels():
    head, [(x, labels), *_] = curricular_batches()
    head(x, labels)
    t = head.t.item()
    plain = hand_logits(x, head.weight, labels, 64.0, lambda c: c)
    torch.testing.assert_close(head(x), plain, atol=1e-10, rtol=0)  # no labels: plain cosines
    assert head.t.item() == t
    head.eval()
    logits = head(x, labels)  # eval with labels: margin and modulation with t as it is
    assert head.t.item() == t
    expected, _ = hand_curricular_logits(x, head.weight, labels, 64.0, 0.5, t)
    torch.testing.assert_close(logits, expected, atol=1e-9, rtol=0)


def test_curricularface_t_is_saved_and_a_resumed_head_goes_on_exactly():
    head, batches = curricular_batches()
    head(*batches[0])
    state = {key: value.clone() for key, value in head.state_dict().items()}
    assert set(state) == {"weight", "t"} and state["t"].item() == head.t.item() != 0.0
    resumed = build_head("curricularface", D, C, margin=0.5).double()
    resumed.load_state_dict(state)
    for x, labels in batches[1:]:
        assert torch.equal(resumed(x, labels), head(x, labels))
        assert torch.equal(resumed.t, head.t)


def test_list_heads_shows_every_head_with_its_defaults():
    from typer.testing import CliRunner

    from pooling_lab.cli import app

    result = CliRunner().invoke(app, ["list", "heads"], env={"COLUMNS": "240", "NO_COLOR": "1", "TERM": "dumb"})
    assert result.exit_code == 0
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in result.output.splitlines() if line.startswith("│")]
    defaults = {name: default for name, default, _ in cells if name}
    assert defaults == {
        "linear": "bias=True, label_smoothing=0.0",
        "cosine": "scale=16.0, label_smoothing=0.0",
        "arcface": "scale=30.0, margin=0.5, easy_margin=False, label_smoothing=0.0",
        "cosface": "scale=30.0, margin=0.35, label_smoothing=0.0",
        "subcenter_arcface": "centers=3, scale=30.0, margin=0.5, easy_margin=False, label_smoothing=0.0",
        "curricularface": "scale=64.0, margin=0.5, label_smoothing=0.0",
        "contrastive": "pos_margin=0.0, neg_margin=0.7",
        "triplet": "margin=0.1",
        "multi_similarity": "alpha=2.0, beta=50.0, base=0.5",
    }
