"""Where the pull on p comes from, in the regime study: the gradient split that runs record with
``record.gradient_split`` (grad_split.csv: at every record step, the gradient of the loss with
respect to p through the target logits, ``target``, and through the other logits,
``non_target``; for a pair loss through the positive and the negative pairs).  Gradient descent
moves p by -lr * grad, so a negative part pushes p up.

Only the global pool's p is used (module ``pool``, parameter ``p``: the p that ``p_final`` and the
probe are about).  Per run:

- ``grad_<part>``: the part's mean over all recorded steps; ``grad_<part>_last_half``: its mean
  over the recorded steps after half of the run's last recorded step;
- ``balance`` = mean target part - mean non-target part (positive - negative for a pair loss),
  and ``balance_last_half`` the same over the last half;
- ``push_last_half`` = -(sum of the parts' last-half means) = -(mean gradient of p over the last
  half): > 0 means training still pushed p up at the end, < 0 down.

Per regime (its finished runs with a split, over all its margins and seeds):

- the Spearman correlation of ``balance`` with the log drift (ln learned p - ln p_opt), with a
  bootstrap interval and a permutation p-value (``stats.spearman_test``): does the balance of the
  two parts order the runs by how far p ends from p_opt?
- sign agreement, k of n: the runs in which the sign of ``push_last_half`` (p pushed up or down
  over the last half) equals the sign of the log drift (p above or below p_opt), of the n runs
  where neither is 0 or missing: is p still pushed in the direction it has drifted?
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pooling_lab.analysis.stats import Correlation, spearman_test

GLOBAL_POOL, P = "pool", "p"  # ``Classifier.pool``, whose p is a run's p_final
PAIRS = (("target", "non_target"), ("positive", "negative"))  # (first, second) of a classifier head, a pair loss
BALANCE, BALANCE_LAST_HALF, PUSH_LAST_HALF = "balance", "balance_last_half", "push_last_half"
LAST_HALF = "_last_half"
PART_COLUMNS = [f"grad_{part}{suffix}" for pair in PAIRS for suffix in ("", LAST_HALF) for part in pair]
NUMBERS = [*PART_COLUMNS, BALANCE, BALANCE_LAST_HALF, PUSH_LAST_HALF]  # per run, and per cell with intervals
SPLIT_RUNS, AGREE, COUNTED = "split_runs", "sign_agree", "sign_runs"


def run_mechanism(grad_split: pd.DataFrame) -> pd.DataFrame:
    """Per ``run_id`` of ``grad_split`` (grad_split.csv rows of any runs): the part means, the
    balances and the last-half push (see the module's docstring); no rows when none recorded it."""
    rows = grad_split[(grad_split["module"] == GLOBAL_POOL) & (grad_split["param"] == P)]
    if rows.empty:
        return pd.DataFrame(columns=["run_id"])
    rows = rows.assign(grad=pd.to_numeric(rows["grad"], errors="coerce"), step=pd.to_numeric(rows["step"]))
    late = rows["step"] > rows.groupby("run_id")["step"].transform("max") / 2
    whole = rows.pivot_table(index="run_id", columns="part", values="grad", aggfunc="mean")
    half = rows[late].pivot_table(index="run_id", columns="part", values="grad", aggfunc="mean").reindex(whole.index)
    frame = pd.concat([whole.add_prefix("grad_"), half.add_prefix("grad_").add_suffix(LAST_HALF)], axis=1)
    frame[BALANCE] = _balance(whole)
    frame[BALANCE_LAST_HALF] = _balance(half)
    frame[PUSH_LAST_HALF] = -half.sum(axis=1, min_count=1)
    frame.columns.name = None
    return frame.reset_index()


def _balance(means: pd.DataFrame) -> pd.Series:
    """first part - second part, of whichever pair a run has."""
    balance = pd.Series(np.nan, index=means.index)
    for first, second in PAIRS:
        if {first, second} <= set(means.columns):
            balance = balance.fillna(means[first] - means[second])
    return balance


def sign_agreement(push: np.ndarray, log_drift: np.ndarray) -> tuple[int, int]:
    """(k, n): of the n runs where neither is 0 or NaN, the k where both have the same sign."""
    push_sign, drift_sign = np.sign(np.asarray(push, float)), np.sign(np.asarray(log_drift, float))
    counted = (push_sign != 0) & (drift_sign != 0) & ~np.isnan(push_sign) & ~np.isnan(drift_sign)
    return int((push_sign == drift_sign)[counted].sum()), int(counted.sum())


def regime_mechanism(runs: pd.DataFrame) -> tuple[Correlation, int, int]:
    """Over one regime's finished runs: Spearman of ``balance`` with the log drift, and the sign
    agreement of ``push_last_half`` with it."""
    split = runs[runs[BALANCE].notna()]
    drift = split["log_drift"].to_numpy(float) if "log_drift" in split else np.full(len(split), np.nan)
    agree, counted = sign_agreement(split[PUSH_LAST_HALF].to_numpy(float), drift)
    return spearman_test(split[BALANCE].to_numpy(float), drift), agree, counted


DESCRIPTION = (
    "From grad_split.csv (runs with record.gradient_split), the global pool's p only. Gradient descent moves "
    "p by -lr * grad: a negative part pushes p up. Per run: each part's mean over the recorded steps "
    "(target = through the target logits, non-target = through the others; a pair loss: positive and "
    "negative pairs), balance = mean target part - mean non-target part (positive - negative), and "
    "push (last half) = -(the mean gradient over the recorded steps after half the run's last one): "
    "> 0 means p was still pushed up at the end. Per cell: mean over seeds with a 95% bootstrap interval. "
    "Per regime: Spearman's rho of the balance with the log drift across its runs (interval, permutation "
    "p), and sign agreement: of the runs where neither is 0, those where p was pushed over the last half "
    "in the direction of its drift (push > 0 and learned p above p_opt, or push < 0 and below)."
)
