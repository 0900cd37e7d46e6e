"""Defining an experiment: the schema, the YAML file with its ``--set`` overrides, and the plan
of runs it expands to (sweeps, seeds, run ids, folder names)."""

from pooling_lab.experiment.plan import Plan, RunSpec, dir_name_of, load_plan, run_id_of
from pooling_lab.experiment.schema import (
    SEED_KEY,
    EvalConfig,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    PoolParamsConfig,
    RecordConfig,
    SweepConfig,
    TrainConfig,
)

__all__ = [
    "SEED_KEY",
    "EvalConfig",
    "ExperimentConfig",
    "ModelConfig",
    "OptimConfig",
    "Plan",
    "PoolParamsConfig",
    "RecordConfig",
    "RunSpec",
    "SweepConfig",
    "TrainConfig",
    "dir_name_of",
    "load_plan",
    "run_id_of",
]
