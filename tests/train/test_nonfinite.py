"""Non-finite training: a diverging run keeps its trace and the sweep goes on; skip_step leaves
out exactly the non-finite updates; the watch names the first non-finite step."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny_sweeps import experiment, keeping_threads, run_cli, run_dir_of, status_of

from pooling_lab.experiment import load_plan
from pooling_lab.results import RunFiles
from pooling_lab.run.sweep import prepare
from pooling_lab.train.loop import SilentProgress, Trainer
from pooling_lab.train.nonfinite import Diverged, NonFiniteWatch, guarded_step

SHORT = {"epochs": 1}





# --- divergence ------------------------------------------------------------------------------------


def test_a_diverging_run_keeps_its_trace_and_the_sweep_goes_on(tmp_path: Path) -> None:
    path = experiment(
        tmp_path, train=SHORT, record={"every_steps": 1},
        optim={"pool_params": {"clamp": None}},
        sweep={"grid": {"optim.pool_params.lr_mult": [1e6, 5.0]}},
    )
    out = tmp_path / "results"
    result = run_cli("run", path, "--out", out, "-q")

    assert result.exit_code == 1
    diverged, fine = run_dir_of(out, path, 0), run_dir_of(out, path, 1)
    status = status_of(diverged)
    assert status["status"] == "diverged" and status["error"].startswith("non-finite")
    assert f"{diverged.name}: diverged: non-finite" in result.stderr and str(diverged / "status.json") in result.stderr
    step, last = status["diverged_step"], status["last_finite"]["pool.p"]
    trace = pd.read_csv(diverged / "params.csv").set_index("step")["value"]
    assert trace[0] == 3.0 and math.isfinite(last)
    assert trace[step - 1] == last and not math.isfinite(trace[step])  # kept up to and past the step
    assert status_of(fine)["status"] == "done"

    again = run_cli("run", path, "--out", out, "-q")  # a diverged run is an outcome: not run again
    assert again.exit_code == 1 and f"{diverged.name}: already diverged" in again.stdout
    assert status_of(diverged)["attempts"] == 1


def test_skip_step_leaves_out_the_non_finite_updates(tmp_path: Path) -> None:
    plan = load_plan(experiment(tmp_path, train=SHORT | {"on_nonfinite": "skip_step"}))
    prepared = prepare(plan, tmp_path / "results")
    [spec] = plan.runs
    trainer = Trainer(spec, RunFiles(tmp_path / "run"), next(iter(prepared.data.values())), SilentProgress())
    loss, calls = trainer.model.head.loss, []

    def poisoned(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        value = loss(logits, labels)
        return value * math.nan if len(calls) in (3, 4, 9) else value

    trainer.model.head.loss = poisoned
    with keeping_threads():
        status = trainer.run()
    assert status["status"] == "done" and status["skipped_steps"] == 3
    assert math.isfinite(status["p_final"]) and math.isfinite(status["test_accuracy"])


def test_guarded_step_skips_exactly_like_leaving_the_step_out() -> None:
    """SGD with momentum and AdamW, a non-finite step first and in the middle: parameters and
    optimiser state end as if those steps had never been taken."""
    for make in (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
                 lambda ps: torch.optim.AdamW(ps, lr=0.01)):
        torch.manual_seed(0)
        guarded, plain = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
        plain.load_state_dict(guarded.state_dict())
        guarded_opt, plain_opt = make(guarded.parameters()), make(plain.parameters())
        inputs = torch.randn(5, 4, 3)
        for index, x in enumerate(inputs):
            bad = index in (0, 2)
            loss = guarded(x).square().mean() * (math.inf if bad else 1.0)
            guarded_opt.zero_grad()
            loss.backward()
            assert bool(guarded_step(guarded_opt, loss.detach())) is not bad
            if not bad:
                plain_opt.zero_grad()
                plain(x).square().mean().backward()
                plain_opt.step()
        for mine, theirs in zip(guarded.parameters(), plain.parameters(), strict=True):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def test_the_watch_names_the_first_non_finite_step_and_keeps_the_last_finite_values(tmp_path: Path) -> None:
    plan = load_plan(experiment(tmp_path))
    from pooling_lab.models import build_model

    model = build_model(plan.runs[0].config, in_channels=3, num_classes=4)
    watch = NonFiniteWatch(model, torch.device("cpu"))
    finite = torch.tensor(1.0)
    for step, p in enumerate([2.5, 2.25], start=1):
        model.pool.p.data.fill_(p)
        watch.observe(step, finite)
    watch.check()
    model.pool.p.data.fill_(2.0)
    watch.observe(3, torch.tensor(math.nan))
    model.pool.p.data.fill_(math.nan)
    watch.observe(4, finite)
    with pytest.raises(Diverged, match="non-finite loss at step 3") as caught:
        watch.check()
    assert caught.value.step == 3 and caught.value.last_finite == {"pool.p": 2.25}
