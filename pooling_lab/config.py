"""The experiment schema, YAML loading, ``--set`` overrides and sweep expansion into runs.

One YAML file describes a base configuration plus an optional ``sweep``.  Loading it gives a
``Plan``: the validated base and one ``RunSpec`` per run (grid x zip x seeds), each fully
resolved, with a stable id (a hash of the resolved config) and a readable directory name.
Every problem is raised as a one-line ``UserError`` naming the file, the YAML line where known,
the dotted field and the bad value, before anything is trained or written.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pooling_lab.config_errors import describe_validation_error, yaml_line
from pooling_lab.data.spec import DataConfig
from pooling_lab.errors import UserError
from pooling_lab.heads import HEADS
from pooling_lab.labels import format_value
from pooling_lab.models.backbones import BACKBONES
from pooling_lab.pooling import GLOBAL_POOLS
from pooling_lab.pooling.local_pools import LOCAL_POOLS

SEED_KEY = "train.seed"
DOTTED_KEY = r"[A-Za-z_]\w*(\.\w+)*"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


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

    # how a run computes and how often it saves, not what it computes: left out of the run id
    NOT_IN_RUN_ID: ClassVar[frozenset[str]] = frozenset({"threads", "checkpoint_every_steps", "compile"})

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError(f"{value!r} is not one of auto, cpu, cuda, cuda:N, mps")
        return value


class RecordConfig(StrictModel):
    every_steps: Annotated[int, Field(ge=1)] = Field(10, description="trace pooling parameters every N steps")


Metric = Annotated[str, Field(pattern=r"^(accuracy|map|recall@[1-9][0-9]*)$")]


class EvalConfig(StrictModel):
    """What is measured after training (per epoch only accuracy is measured, it is cheap)."""

    metrics: list[Metric] = Field(
        default_factory=lambda: ["accuracy", "map", "recall@1"],
        description="accuracy, map (retrieval mean average precision), recall@K",
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
        return self


@dataclass(frozen=True)
class RunSpec:
    """One run of a plan: its resolved config and where it sits in the sweep."""

    config: ExperimentConfig
    swept: dict[str, Any]
    run_id: str
    dir_name: str


@dataclass(frozen=True)
class Plan:
    source: Path
    raw: dict[str, Any]
    experiment: ExperimentConfig
    swept_keys: list[str]
    runs: list[RunSpec]


# --- loading -----------------------------------------------------------------------------------


class YamlLoader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, which reads ``1e-3`` as a string; read it as a float, as YAML 1.2 does."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+.0123456789")
)


def read_yaml(path: Path) -> tuple[dict[str, Any], str]:
    """The mapping in ``path`` and its text (kept to find line numbers for errors)."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError("no such file", source=source) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read: {error}", source=source) from None
    try:
        data = yaml.load(text, YamlLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(error, "problem", None) or str(error)
        raise UserError(f"not valid YAML: {problem}", source=where) from None
    if not isinstance(data, dict):
        found = "an empty file" if data is None else f"a {type(data).__name__}"
        raise UserError(f"expected a mapping of sections at the top, got {found}", source=source)
    return data, text


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", value parsed as YAML: numbers, lists, mappings, null)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(DOTTED_KEY, key):
        raise UserError(f"--set expects key.path=value, got {text!r}")
    try:
        return key, yaml.load(value, YamlLoader) if value.strip() else None
    except yaml.YAMLError:
        raise UserError(f"--set {key}: value {value!r} is not valid YAML") from None


def set_dotted(tree: dict[str, Any], parts: list[str], value: Any, source: str) -> None:
    """Set ``tree[a][b] = value`` for parts ``[a, b]``, creating mappings on the way."""
    node = tree
    for index, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: index + 1])
            raise UserError(f"cannot set it: {where} is {child!r}, not a mapping", source=source, field=".".join(parts))
        node = child
    node[parts[-1]] = value


def override_path(key: str) -> list[str]:
    """The parts of an override key; a sweep axis name is itself dotted, so
    ``sweep.grid.head.margin`` is the axis ``head.margin`` of ``sweep.grid``."""
    for kind in ("grid", "zip"):
        if key.startswith(f"sweep.{kind}."):
            return ["sweep", kind, key.removeprefix(f"sweep.{kind}.")]
    return key.split(".")


def load_plan(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> Plan:
    """Read, override, validate and expand an experiment file."""
    path = Path(path)
    raw, text = read_yaml(path)
    for override in overrides:
        key, value = parse_override(override)
        set_dotted(raw, override_path(key), value, source="--set")
    experiment = _validate(raw, path, text)
    swept_keys, runs = _expand(raw, experiment, path, text)
    return Plan(path, raw, experiment, swept_keys, runs)


def _validate(
    tree: dict[str, Any], path: Path, text: str, context: str = "", lines: dict[str, int | None] | None = None
) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as error:
        raise describe_validation_error(error, path, text, context, lines) from None


# --- sweeps ------------------------------------------------------------------------------------


def _expand(raw: dict[str, Any], experiment: ExperimentConfig, path: Path, text: str) -> tuple[list[str], list[RunSpec]]:
    sweep = experiment.sweep or SweepConfig()
    grid_keys = list(sweep.grid)
    zip_keys = list(sweep.zip)
    zip_rows = list(zip(*map(axis_items, sweep.zip.values()), strict=True)) if zip_keys else [()]
    seeds = sweep.seeds if sweep.seeds is not None else [None]
    base = {key: value for key, value in raw.items() if key != "sweep"}
    lines = {key: yaml_line(text, ["sweep", kind, key]) for kind in ("grid", "zip") for key in getattr(sweep, kind)}
    sweep_source = _located(path, yaml_line(text, ["sweep"]))

    runs: list[RunSpec] = []
    seen: dict[str, dict[str, Any]] = {}
    for grid_items in itertools.product(*map(axis_items, sweep.grid.values())):
        for zip_items in zip_rows:
            for seed in seeds:
                items = dict(zip([*grid_keys, *zip_keys], [*grid_items, *zip_items], strict=True))
                swept = {key: shown for key, (shown, _) in items.items()}
                resolved = copy.deepcopy(base)
                for key, (_, value) in items.items():
                    set_dotted(resolved, key.split("."), copy.deepcopy(value), source=_located(path, lines[key]))
                if seed is not None:
                    set_dotted(resolved, SEED_KEY.split("."), seed, source=sweep_source)
                context = f"in the sweep run {_describe(swept)}" if swept else ""
                config = _validate(resolved, path, text, context, lines)
                run_id = run_id_of(config)
                if run_id in seen:
                    raise UserError(
                        f"the sweep produces the same run twice ({_describe(seen[run_id])} and "
                        f"{_describe(swept | {SEED_KEY: config.train.seed})}): remove the repeated value",
                        source=sweep_source,
                        field="sweep",
                    )
                seen[run_id] = swept | {SEED_KEY: config.train.seed}
                runs.append(RunSpec(config, swept, run_id, dir_name_of(swept, config.train.seed, run_id)))
    return grid_keys + zip_keys, runs


def _located(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line else str(path)


def run_id_of(config: ExperimentConfig) -> str:
    """A stable id: the hash of everything that can change a run's result.  Where the data sit
    (``data.root``, ``data.download``, ``data.cache_root``) and ``TrainConfig.NOT_IN_RUN_ID`` (threads, checkpoint
    frequency) do not count, so moving the data or the machine does not orphan finished runs."""
    payload = config.model_dump(
        mode="json",
        exclude={"name": True, "description": True, "sweep": True, "data": {"root", "download", "cache_root"}, "train": set(TrainConfig.NOT_IN_RUN_ID)},
    )
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return digest[:10]


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in values.items())


def dir_name_of(swept: dict[str, Any], seed: int, run_id: str) -> str:
    """Readable run folder name: last key parts with their values, the seed and a short id."""
    leaves = [key.rsplit(".", 1)[-1] for key in swept]
    parts = []
    for key, leaf in zip(swept, leaves, strict=True):
        label = leaf if leaves.count(leaf) == 1 else key
        parts.append(f"{label}={format_value(swept[key])}")
    parts.append(f"seed={seed}")
    name = "_".join(parts)
    name = re.sub(r"[^A-Za-z0-9_.=+,-]+", "-", name).strip("-")[:120]
    return f"{name}_{run_id[:6]}"
