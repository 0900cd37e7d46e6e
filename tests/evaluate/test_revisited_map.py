"""``revisited_map``: the easy / medium / hard protocols of revisited Oxford and Paris, by hand
and against a straightforward per-query implementation of the protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pooling_lab.evaluate import revisited_map

KS = (1, 5, 10)
# one query ranking the database 0, 1, ..., 7 (scores fall with the index)
RANKED = np.arange(8, 0, -1, dtype=float)[None, :]
GND = [{"easy": [1, 4], "hard": [3, 6], "junk": [2], "bbx": [0, 0, 1, 1]}]


def test_hand_computed_protocols() -> None:
    """Ranking 0 1 2 3 4 5 6 7; easy 1 4, hard 3 6, junk 2.

    easy   (2, 3, 6 ignored): 0 1 4 5 7 -> positives at places 1, 2
           AP = [(0 + 1/2)/2 + (1/2 + 2/3)/2] / 2 = 5/12  (not the plain AP (1/2 + 2/3)/2)
    medium (2 ignored): 0 1 3 4 5 6 7 -> positives at places 1, 2, 3, 5
           AP = [(0 + 1/2)/2 + (1/2 + 2/3)/2 + (2/3 + 3/4)/2 + (3/5 + 4/6)/2] / 4 = 261/480
    hard   (2, 1, 4 ignored): 0 3 5 6 7 -> positives at places 1, 3
           AP = [(0 + 1/2)/2 + (1/3 + 2/4)/2] / 2 = 1/3
    mP@k: the last positive's 1-based place L caps k: positives in the first min(k, L) / min(k, L)
    """
    got = revisited_map(RANKED, GND, KS)
    assert list(got) == ["easy", "medium", "hard", *(f"{p}_mp@{k}" for p in ("easy", "medium", "hard") for k in KS)]
    assert got["easy"] == pytest.approx(5 / 12)
    assert got["medium"] == pytest.approx(261 / 480)
    assert got["hard"] == pytest.approx(1 / 3)
    # easy: places 2, 3 (L = 3); medium: 2, 3, 4, 6 (L = 6); hard: 2, 4 (L = 4)
    assert [got[f"easy_mp@{k}"] for k in KS] == pytest.approx([0, 2 / 3, 2 / 3])
    assert [got[f"medium_mp@{k}"] for k in KS] == pytest.approx([0, 3 / 5, 4 / 6])
    assert [got[f"hard_mp@{k}"] for k in KS] == pytest.approx([0, 2 / 4, 2 / 4])


def test_junk_is_taken_out_of_the_ranking() -> None:
    """A junk image ranked first changes nothing; ranked as a negative it would halve the AP."""
    gnd = [{"easy": [1], "hard": [], "junk": [0]}]
    got = revisited_map(RANKED[:, :3], gnd, (1,))
    assert got["easy"] == got["medium"] == 1.0
    assert got["easy_mp@1"] == got["medium_mp@1"] == 1.0
    without_junk = revisited_map(RANKED[:, :3], [{"easy": [1], "hard": [], "junk": []}], (1,))
    assert without_junk["easy"] == pytest.approx((0 + 1 / 2) / 2)  # the trapezoid at place 1


def test_queries_without_positives_are_left_out_of_that_protocol() -> None:
    """The second query has no hard images: it counts in easy and medium (AP 1), not in hard."""
    scores = np.vstack([RANKED, RANKED])
    gnd = [GND[0], {"easy": [0], "hard": [], "junk": [5]}]
    got = revisited_map(scores, gnd, KS)
    alone = revisited_map(RANKED, GND, KS)
    assert got["hard"] == pytest.approx(alone["hard"])
    assert got["hard_mp@5"] == pytest.approx(alone["hard_mp@5"])
    assert got["easy"] == pytest.approx((alone["easy"] + 1) / 2)
    assert got["medium_mp@10"] == pytest.approx((alone["medium_mp@10"] + 1) / 2)
    nobody_hard = revisited_map(RANKED, [{"easy": [0], "hard": [], "junk": []}], KS)
    assert np.isnan(nobody_hard["hard"]) and np.isnan(nobody_hard["hard_mp@1"])
    assert nobody_hard["easy"] == 1.0


def test_ties_rank_by_database_index_and_torch_equals_numpy() -> None:
    gnd = [{"easy": [2], "hard": [], "junk": []}]
    # all scores tie: the ranking is 0 1 2 3, the positive at place 2: AP (0 + 1/3) / 2
    assert revisited_map(np.zeros((1, 4)), gnd, (1,))["easy"] == pytest.approx(1 / 6)
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 12))
    gnd = [{"easy": [0, 5], "hard": [7], "junk": [1]}] * 3
    assert revisited_map(torch.tensor(scores), gnd) == revisited_map(scores, gnd)


def reference(scores: np.ndarray, gnd: list[dict], ks: tuple[int, ...]) -> dict[str, float]:
    """The protocol per query in plain Python: rank, drop the ignored, sum trapezoids."""
    protocols = {"easy": (["easy"], ["junk", "hard"]), "medium": (["easy", "hard"], ["junk"]),
                 "hard": (["hard"], ["junk", "easy"])}
    out: dict[str, float] = {}
    for name, (positive_lists, ignored_lists) in protocols.items():
        aps, precisions = [], []
        for q, entry in enumerate(gnd):
            positives = {i for lst in positive_lists for i in entry[lst]}
            ignored = {i for lst in ignored_lists for i in entry[lst]}
            if not positives:
                continue
            ranking = sorted(range(scores.shape[1]), key=lambda i: (-scores[q, i], i))
            kept = [i for i in ranking if i not in ignored]
            places = [place for place, i in enumerate(kept) if i in positives]
            ap = 0.0
            for found, place in enumerate(places):
                before = 1.0 if place == 0 else found / place
                ap += (before + (found + 1) / (place + 1)) / 2 / len(positives)
            aps.append(ap)
            precisions.append([sum(p + 1 <= min(places[-1] + 1, k) for p in places) / min(places[-1] + 1, k)
                               for k in ks])
        out[name] = float(np.mean(aps)) if aps else float("nan")
        for j, k in enumerate(ks):
            out[f"{name}_mp@{k}"] = float(np.mean([row[j] for row in precisions])) if aps else float("nan")
    return out


@pytest.mark.parametrize("seed", range(6))
def test_matches_a_per_query_implementation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    queries, database = 9, 60
    scores = np.round(rng.normal(size=(queries, database)), 1)  # many ties
    gnd = []
    for _ in range(queries):
        labels = rng.choice(4, size=database, p=[0.7, 0.1, 0.1, 0.1])  # none, easy, hard, junk
        if rng.random() < 0.3:
            labels[labels == 2] = 0  # some queries have no hard images
        gnd.append({name: np.flatnonzero(labels == code).tolist()
                    for code, name in ((1, "easy"), (2, "hard"), (3, "junk"))})
    ks = (1, 3, 5, 10, 50)
    got, expected = revisited_map(scores, gnd, ks), reference(scores, gnd, ks)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key


@pytest.mark.parametrize(("gnd", "message"), [
    ([{"easy": [0], "hard": [8], "junk": []}], "query 0: 'hard' index 8 is outside the 8 database images"),
    ([{"easy": [0, 3], "hard": [], "junk": [3]}], "query 0: image 3 is in both 'easy' and 'junk'"),
    ([{"easy": [0], "hard": []}], "query 0: expected a dict with index lists easy, hard, junk"),
    ([{"easy": [0.5], "hard": [], "junk": []}], "query 0: 'easy' is not a list of image indices"),
    ([GND[0], GND[0]], "2 ground-truth entries for 1 queries"),
])
def test_bad_ground_truth_is_refused(gnd: list, message: str) -> None:
    with pytest.raises(ValueError) as error:
        revisited_map(RANKED, gnd)
    assert str(error.value) == message
