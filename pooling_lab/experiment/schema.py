"""The experiment schema: every section of an experiment file as a strict pydantic model.

Each component's options (pools, heads, backbones) are the typed arguments of its constructor,
taken from the registries, so the schema and the code cannot drift apart.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from pooling_lab.data.spec import DataConfig, optional_field
from pooling_lab.models.backbones import BACKBONES
from pooling_lab.models.heads import HEADS
from pooling_lab.pooling import GLOBAL_POOLS
from pooling_lab.pooling.local_pools import LOCAL_POOLS
from pooling_lab.registry import StrictModel

SEED_KEY = "train.seed"
DOTTED_KEY = r"[A-Za-z_]\w*(\.\w+)*"


def _default(registry: Any, name: str) -> Any:
    return lambda: registry.get(name).spec_model()


class ModelConfig(StrictModel):
    backbone: BACKBONES.spec_type("small_cnn") = Field(default_factory=_default(BACKBONES, "small_cnn"))  # type: ignore[valid-type]
    pool: GLOBAL_POOLS.spec_type("gem") = Field(default_factory=_default(GLOBAL_POOLS, "gem"))  # type: ignore[valid-type]
    local_pool: LOCAL_POOLS.spec_type("max") | None = Field(  # type: ignore[valid-type]
        None, description="pool used at every downsampling point of the backbone (null: its own)"
    )
    embedding_dim: Annotated[int, Field(gt=0)] | None = Field(
        None, description="project the pooled descriptor to this width (null: no projection)"
    )
    embedding_norm: bool = Field(True, description="batch-normalise the projected embedding")
    normalize_pooled: bool = Field(
        False, exclude_if=lambda value: not value,  # left out of dumps while false: run ids stay
        description="L2-normalise the pooled descriptor before the projection (with embedding_norm "
        "false: the GeM paper's learned whitening, pool -> L2 -> linear with bias -> L2)",
    )

    @model_validator(mode="after")
    def _normalized_input_needs_a_projection(self) -> ModelConfig:
        if self.normalize_pooled and self.embedding_dim is None:
            raise ValueError("normalize_pooled normalises the projection's input: set embedding_dim too")
        return self


class PoolParamsConfig(StrictModel):
    """The optimiser group of the learnable pooling parameters (p and friends)."""

    lr_mult: Annotated[float, Field(ge=0)] = Field(10.0, description="pool lr = lr * lr_mult")
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    freeze_epochs: Annotated[int, Field(ge=0)] = Field(0, description="hold fixed for N epochs")
    clamp: tuple[float | None, float | None] | None = Field(
        None, description="[low, high] range learnable exponents are kept in after each step"
    )

    @field_validator("clamp")
    @classmethod
    def _ordered(cls, value: tuple[float | None, float | None] | None) -> Any:
        if value is not None and None not in value and value[0] > value[1]:
            raise ValueError(f"low {value[0]} is above high {value[1]}")
        return value


class OptimConfig(StrictModel):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: Annotated[float, Field(gt=0)] = 0.1
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    nesterov: bool = False
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    weight_decay: Annotated[float, Field(ge=0)] = 5e-4
    schedule: Literal["constant", "step", "cosine"] = "cosine"
    warmup_epochs: Annotated[float, Field(ge=0)] = 0.0
    step_epochs: Annotated[int, Field(gt=0)] = Field(30, description="step schedule: decay every N epochs")
    gamma: Annotated[float, Field(gt=0, le=1)] = Field(0.1, description="step schedule: decay factor")
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = Field(0.0, description="cosine floor as a fraction of lr")
    pool_params: PoolParamsConfig = Field(default_factory=PoolParamsConfig)


class BatchSamplerConfig(StrictModel):
    """How training batches are drawn, where not uniformly at random (see pooling_lab/data/m_per_class.py)."""

    m_per_class: Annotated[int, Field(ge=1)] = Field(
        description="every batch holds this many images of each of batch_size / m_per_class classes"
    )


class TrainConfig(StrictModel):
    epochs: Annotated[int, Field(ge=1)] = 10
    batch_size: Annotated[int, Field(ge=1)] = 128
    eval_batch_size: Annotated[int, Field(ge=1)] = 1024
    seed: int = 0
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 elsewhere; pooling always fp32"
    )
    threads: Annotated[int, Field(ge=1)] | None = Field(None, description="CPU threads (null: torch default)")
    checkpoint_every_steps: Annotated[int, Field(ge=1)] | None = Field(
        None, description="also checkpoint every N steps, not only at epoch ends (null: epoch ends only)"
    )
    on_nonfinite: Literal["stop", "skip_step"] = Field(
        "stop", description="a non-finite loss: stop the run as diverged, or skip that update and go on"
    )
    compile: bool = Field(
        False, description="torch.compile the backbone; where compilation fails the run goes on eagerly"
    )
    sync_batchnorm: bool = Field(
        False, description="under torchrun on CUDA: batch-norm statistics over the whole batch (SyncBatchNorm) "
        "instead of each GPU's share"
    )
    batch_sampler: BatchSamplerConfig | None = optional_field(
        "{m_per_class: M}: batches of M images per class, which pair losses need (null: random batches)"
    )

    # how a run computes and how often it saves, not what it computes: left out of the run id (so
    # are the number of processes and sync_batchnorm, which only matter under torchrun)
    NOT_IN_RUN_ID: ClassVar[frozenset[str]] = frozenset({"threads", "checkpoint_every_steps", "compile", "sync_batchnorm"})

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError(f"{value!r} is not one of auto, cpu, cuda, cuda:N, mps")
        return value

    @model_validator(mode="after")
    def _whole_classes_per_batch(self) -> TrainConfig:
        sampler = self.batch_sampler
        if sampler is not None and self.batch_size % sampler.m_per_class:
            raise ValueError(f"batch_sampler.m_per_class {sampler.m_per_class} does not divide batch_size {self.batch_size}")
        return self


class RecordConfig(StrictModel):
    every_steps: Annotated[int, Field(ge=1)] = Field(10, description="trace pooling parameters every N steps")
    gradient_split: bool = Field(
        False, description="also record, at those steps, each learnable pooling parameter's gradient split into "
        "its part through the target logit and through the other logits (contrastive: positive and negative "
        "pairs), in grad_split.csv"
    )

    # what is recorded, not what is computed: left out of the run id
    NOT_IN_RUN_ID: ClassVar[frozenset[str]] = frozenset({"gradient_split"})


DEFAULT_PLATEAU_TOLERANCE = 0.005  # absolute mAP (accuracy when the probe measures no mAP)
Metric = Annotated[str, Field(pattern=r"^(accuracy|map|map@r|r_precision|recall@[1-9][0-9]*)$")]


class EvalConfig(StrictModel):
    """What is measured after training (per epoch only accuracy is measured, it is cheap)."""

    metrics: list[Metric] = Field(
        default_factory=lambda: ["accuracy", "map", "recall@1"],
        description="accuracy, map (retrieval mean average precision), recall@K, map@r and "
        "r_precision (MAP@R and R-precision, Musgrave et al. 2020)",
    )
    probe_p: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        default_factory=list,
        description="test-time p values to evaluate the trained GeM model at, on the validation split",
    )
    scales: list[Annotated[float, Field(gt=0, le=4, allow_inf_nan=False)]] = Field(
        default_factory=lambda: [1.0],
        min_length=1,
        description="test-time multi-scale: image scales whose descriptors are combined",
    )
    scale_combine: Literal["mean", "max"] = Field("mean", description="how per-scale descriptors combine")
    plateau_tolerance: float | None = optional_field(
        f"the probe's plateau: the smallest p whose validation mAP is within this (absolute) of the "
        f"best p's; default {DEFAULT_PLATEAU_TOLERANCE}",
        ge=0,
        allow_inf_nan=False,
    )

    @property
    def tolerance(self) -> float:
        """The plateau tolerance in force (``plateau_tolerance`` or its default)."""
        return DEFAULT_PLATEAU_TOLERANCE if self.plateau_tolerance is None else self.plateau_tolerance

    @field_validator("metrics")
    @classmethod
    def _has_accuracy(cls, value: list[str]) -> list[str]:
        if "accuracy" not in value:
            raise ValueError("accuracy is always measured; list it first")
        return list(dict.fromkeys(value))


NonEmpty = Field(min_length=1, description="an empty list would leave the sweep without runs")
Dotted = Annotated[str, Field(pattern=f"^{DOTTED_KEY}$")]


Axis = Annotated[list[Any] | dict[str, Any], NonEmpty]
"""A sweep axis: a list of values, or a mapping of labels to values (the labels name the runs,
their folders and legends: ``data: {sparse: {...}, dense: {...}}``)."""


def axis_items(values: list[Any] | dict[str, Any]) -> list[tuple[Any, Any]]:
    """(shown, assigned) pairs of an axis: the label and its value, or the value twice."""
    return list(values.items()) if isinstance(values, dict) else [(value, value) for value in values]


class SweepConfig(StrictModel):
    grid: dict[Dotted, Axis] = Field(
        default_factory=dict, description="cartesian product over dotted keys (lists, or label: value mappings)"
    )
    zip: dict[Dotted, Axis] = Field(
        default_factory=dict, description="lists (or label: value mappings) advanced together"
    )
    seeds: Annotated[list[int], NonEmpty] | None = Field(None, description="train.seed values, one run each")

    @model_validator(mode="after")
    def _well_formed(self) -> SweepConfig:
        if len({len(values) for values in self.zip.values()}) > 1:
            lengths = ", ".join(f"{key} has {len(values)}" for key, values in self.zip.items())
            raise ValueError(f"zip lists differ in length: {lengths}")
        overlap = set(self.grid) & set(self.zip)
        if overlap:
            raise ValueError(f"keys both in grid and zip: {sorted(overlap)}")
        if self.seeds is not None and (SEED_KEY in self.grid or SEED_KEY in self.zip):
            raise ValueError(f"sweep {SEED_KEY} either in seeds or in grid/zip, not both")
        return self


class ExperimentConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="results/<name>/")
    description: str = ""
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    head: HEADS.spec_type("linear") = Field(default_factory=_default(HEADS, "linear"))  # type: ignore[valid-type]
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    record: RecordConfig = Field(default_factory=RecordConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    sweep: SweepConfig | None = None

    @model_validator(mode="after")
    def _probe_needs_validation_split(self) -> ExperimentConfig:
        if self.eval.probe_p and self.data.val_size == 0:
            raise ValueError(
                "eval.probe_p chooses p_opt on the validation split, but data.val_size is 0"
            )
        if self.data.open_set is not None and self.eval.metrics == ["accuracy"]:
            raise ValueError(
                "data.open_set measures retrieval on the unseen classes: list a retrieval metric "
                "(e.g. map) in eval.metrics"
            )
        return self
