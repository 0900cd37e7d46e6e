"""Run under torchrun by test_distributed: train the first run of an experiment on every rank,
then write what this rank's model ended with to REPORT_DIR/rank<R>.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pooling_lab.experiment import load_plan
from pooling_lab.pooling.exponent import global_p
from pooling_lab.results import RunFiles
from pooling_lab.run.sweep import prepare
from pooling_lab.train import distributed
from pooling_lab.train.loop import SilentProgress, Trainer


def main(experiment: str, out: str, report_dir: str) -> None:
    world = distributed.join()
    plan = load_plan(experiment)
    prepared = prepare(plan, Path(out), world)
    spec = plan.runs[0]
    data = next(iter(prepared.data.values()))
    trainer = Trainer(spec, RunFiles(prepared.root / spec.dir_name), data, SilentProgress(), world)
    status = trainer.run()
    parameters = {name: value.flatten().tolist() for name, value in trainer.model.named_parameters()}
    report = {"status": status["status"], "p": global_p(trainer.model.pool), "parameters": parameters}
    (Path(report_dir) / f"rank{world.rank}.json").write_text(json.dumps(report))
    world.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
