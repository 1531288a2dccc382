"""The run config: the single hand-off between the wizard and the engine.

A config is a YAML file that maps onto the dataclasses below. Every field is documented in its
`metadata["help"]`; cross-field checks live in `__post_init__` and raise `ConfigError` with one
sentence a person can act on. Unknown keys are errors that name the nearest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from core.errors import ConfigError

METHODS = ("lora", "lora-8bit", "qlora")
FORMATS = ("auto", "alpaca", "messages", "text")
AUTO = "auto"

METHOD_HELP = {
    "lora": "LoRA on a 16-bit base (bf16 where supported): fastest and best quality, most memory.",
    "lora-8bit": "LoRA on an LLM.int8 base: about half the weight memory of 16-bit, slower steps.",
    "qlora": "QLoRA on a 4-bit NF4 double-quantized base: least memory, close to LoRA quality.",
}


@dataclass
class LoraSettings:
    r: int = field(default=16, metadata={"help": "LoRA rank: the size of the low-rank update."})
    alpha: float = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r, or alpha / sqrt(r) with rslora)."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input during training."})
    target_modules: Union[str, list[str]] = field(
        default="all-linear",
        metadata={"help": "Layers to adapt: 'all-linear' (every linear layer but the output head) or a list of module names."},
    )
    use_dora: bool = field(default=False, metadata={"help": "Weight-decomposed LoRA (DoRA): a little better, slower."})
    use_rslora: bool = field(default=False, metadata={"help": "Rank-stabilised scaling alpha / sqrt(r), better at high ranks."})

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"lora.r must be a positive integer, got {self.r}; 8 to 64 is usual.")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha must be positive, got {self.alpha}; twice lora.r is a sound default.")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}; 0.05 is a sound default.")
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ConfigError("lora.target_modules is an empty list; use 'all-linear' or name the layers to adapt.")


@dataclass
class DataSettings:
    path: str = field(default="", metadata={"help": "A local .json/.jsonl/.csv/.parquet file or folder, or a Hub dataset id."})
    format: str = field(default=AUTO, metadata={"help": "alpaca | messages | text, or auto to detect it from the columns."})
    split: str = field(default="train", metadata={"help": "Split to train on when the dataset has several."})
    subset: Union[str, None] = field(default=None, metadata={"help": "Hub dataset configuration name, if it has several."})
    max_length: int = field(default=1024, metadata={"help": "Longest example in tokens; longer ones are truncated (and counted)."})
    eval_fraction: float = field(default=0.05, metadata={"help": "Share of examples held out for evaluation (0 to disable)."})
    max_eval_examples: int = field(default=200, metadata={"help": "Cap on held-out examples, so evaluation stays quick."})
    completion_only_loss: bool = field(
        default=True, metadata={"help": "Train on the answers only (prompt tokens are masked); alpaca and messages formats."}
    )
    packing: bool = field(
        default=True,
        metadata={"help": "Padding-free batches: examples are concatenated with per-example positions, no pad tokens."},
    )

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(_choice_message("data.format", self.format, FORMATS))
        if self.max_length < 16:
            raise ConfigError(f"data.max_length must be at least 16 tokens, got {self.max_length}.")
        if not 0 <= self.eval_fraction < 0.5:
            raise ConfigError(f"data.eval_fraction must be in [0, 0.5), got {self.eval_fraction}; 0.05 is usual.")


@dataclass
class TrainSettings:
    epochs: float = field(default=1.0, metadata={"help": "Passes over the training set (ignored when max_steps is set)."})
    max_steps: Union[int, None] = field(default=None, metadata={"help": "Stop after this many optimizer steps."})
    batch_size: Union[int, str] = field(
        default=4, metadata={"help": "Micro-batch per GPU, or 'auto' for the fastest that fits in memory."}
    )
    grad_accum: Union[int, str] = field(
        default=4, metadata={"help": "Micro-batches per optimizer step, or 'auto' to keep the effective batch."}
    )
    lr: float = field(default=2.0e-4, metadata={"help": "Peak learning rate of the LoRA weights."})
    lr_scheduler: str = field(default="cosine", metadata={"help": "Learning-rate schedule (any transformers scheduler name)."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "Share of steps spent warming the learning rate up."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay on the LoRA weights."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    optimizer: str = field(
        default=AUTO,
        metadata={"help": "Optimizer name as transformers knows it; auto: adamw_torch_fused on GPU, adamw_torch on CPU."},
    )
    gradient_checkpointing: Union[bool, str] = field(
        default=AUTO, metadata={"help": "Recompute activations to save memory; auto turns it on only when needed."}
    )
    save_steps: int = field(default=200, metadata={"help": "Save a checkpoint every this many steps."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept on disk (older ones are deleted)."})
    eval_steps: Union[int, None] = field(default=None, metadata={"help": "Evaluate every this many steps (default: at save_steps)."})
    logging_steps: int = field(default=1, metadata={"help": "Write a step event every this many steps."})
    seed: int = field(default=42, metadata={"help": "Random seed for data order and LoRA initialisation."})
    attn_implementation: str = field(
        default=AUTO, metadata={"help": "varlen (PyTorch's FlashAttention for packed rows) | sdpa | eager | flash_attention_2 | flex_attention, or auto for the best available."}
    )
    liger_kernels: Union[bool, str] = field(
        default=AUTO, metadata={"help": "Liger's fused kernels (fused linear cross-entropy, RMSNorm, RoPE, SwiGLU); auto: on with CUDA when installed."}
    )

    def __post_init__(self) -> None:
        if self.epochs <= 0 and self.max_steps is None:
            raise ConfigError(f"train.epochs must be positive, got {self.epochs}; or set train.max_steps.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"train.max_steps must be at least 1, got {self.max_steps}.")
        for name in ("batch_size", "grad_accum"):
            value = getattr(self, name)
            if value != AUTO and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"train.{name} must be a positive integer or 'auto', got {value!r}.")
        if not 0 < self.lr < 1:
            raise ConfigError(f"train.lr must be between 0 and 1, got {self.lr}; 2e-4 is usual for LoRA.")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        for name in ("save_steps", "logging_steps", "save_total_limit"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1, got {getattr(self, name)}.")
        if self.gradient_checkpointing not in (True, False, AUTO):
            raise ConfigError(f"train.gradient_checkpointing must be true, false or auto, got {self.gradient_checkpointing!r}.")
        if self.liger_kernels not in (True, False, AUTO):
            raise ConfigError(f"train.liger_kernels must be true, false or auto, got {self.liger_kernels!r}.")
        attn = ("auto", "sdpa", "eager", "varlen", "flash_attention_2", "flash_attention_3", "flex_attention")
        if self.attn_implementation not in attn:
            raise ConfigError(_choice_message("train.attn_implementation", self.attn_implementation, attn))


DISTRIBUTED_MODES = ("auto", "single", "ddp", "fsdp")


@dataclass
class DistributedSettings:
    mode: str = field(
        default=AUTO,
        metadata={"help": "single | ddp (a full copy per GPU, data split) | fsdp (weights sharded across GPUs), or auto: "
                          "ddp over the chosen GPUs when the model fits on each, fsdp when it fits only sharded."},
    )
    gpus: Union[str, list[int]] = field(
        default="all", metadata={"help": "GPUs to train on: 'all' or a list of indices such as [0, 1]."}
    )
    num_processes: Union[int, str] = field(
        default=AUTO,
        metadata={"help": "Training processes on each machine; auto: one per chosen GPU (one on a machine without GPUs)."},
    )
    num_machines: int = field(default=1, metadata={"help": "Machines in the job (see `lora-wizard cluster`)."})
    main_address: str = field(default="127.0.0.1", metadata={"help": "Address of machine 0, which the others reach."})
    main_port: int = field(default=29500, metadata={"help": "Port on machine 0 for the processes to meet."})

    def __post_init__(self) -> None:
        if self.mode not in DISTRIBUTED_MODES:
            raise ConfigError(_choice_message("distributed.mode", self.mode, DISTRIBUTED_MODES))
        if isinstance(self.gpus, str) and self.gpus != "all":
            raise ConfigError(f"distributed.gpus must be 'all' or a list of GPU indices such as [0, 1], got {self.gpus!r}.")
        if isinstance(self.gpus, list) and (not self.gpus or any(index < 0 for index in self.gpus)):
            raise ConfigError(f"distributed.gpus must list GPU indices from 0, got {self.gpus!r}.")
        if self.num_processes != AUTO and (not isinstance(self.num_processes, int) or self.num_processes < 1):
            raise ConfigError(f"distributed.num_processes must be a positive integer or 'auto', got {self.num_processes!r}.")
        if self.num_machines < 1:
            raise ConfigError(f"distributed.num_machines must be at least 1, got {self.num_machines}.")
        if not 0 < self.main_port < 65536:
            raise ConfigError(f"distributed.main_port must be a TCP port (1-65535), got {self.main_port}.")


@dataclass
class RunConfig:
    model: str = field(default="", metadata={"help": "Hub model id (org/name) or a local folder with config.json."})
    method: str = field(default="qlora", metadata={"help": "lora | lora-8bit | qlora."})
    revision: Union[str, None] = field(default=None, metadata={"help": "Hub revision (branch, tag or commit) of the model."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run the model repository's own Python code. Off unless you trust its author."}
    )
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    distributed: DistributedSettings = field(default_factory=DistributedSettings)
    output_dir: str = field(default="", metadata={"help": "Run directory: config, events, checkpoints and the adapter go here."})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(_choice_message("method", self.method, METHODS))

    def check_complete(self) -> None:
        """Checks that a config is ready to train (a partial one is fine while the wizard fills it)."""
        if not self.model:
            raise ConfigError("model is not set; give a Hub id like Qwen/Qwen2.5-0.5B-Instruct or a local folder.")
        if not self.data.path:
            raise ConfigError("data.path is not set; give a .jsonl/.json/.csv/.parquet file or a Hub dataset id.")
        if not self.output_dir:
            raise ConfigError("output_dir is not set; give a folder for the run, for example runs/my-run.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(self.to_yaml())


def _choice_message(key: str, value: Any, choices: typing.Iterable[str]) -> str:
    choices = list(choices)
    nearest = difflib.get_close_matches(str(value), choices, n=1)
    hint = f"; did you mean '{nearest[0]}'?" if nearest else ""
    return f"{key} is '{value}', which is not one of {', '.join(choices)}{hint}"


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Checks a YAML value against a field's annotation, converting the harmless cases (int for float)."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(key, value, option)
            except ConfigError as error:
                errors.append(error)
        raise errors[0]
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}.")
        (item_type,) = typing.get_args(annotation)
        return [_coerce(f"{key}[{i}]", item, item_type) for i, item in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}.")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be a whole number, got {value!r}.")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}.")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be text, got {value!r}.")
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of settings, got {value!r}.")
        return _build(annotation, value, prefix=f"{key}.")
    raise TypeError(f"unsupported annotation {annotation!r} for {key}")


# Names people bring from transformers, TRL and other fine-tuning tools.
SYNONYMS = {
    "learning_rate": "lr", "per_device_train_batch_size": "batch_size", "micro_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum", "num_train_epochs": "epochs", "num_epochs": "epochs",
    "lora_alpha": "alpha", "lora_dropout": "dropout", "rank": "r", "lora_r": "r", "max_seq_length": "max_length",
    "sequence_len": "max_length", "dataset": "path", "model_name_or_path": "model", "base_model": "model",
    "output": "output_dir", "use_gradient_checkpointing": "gradient_checkpointing", "optim": "optimizer",
    "nproc_per_node": "num_processes", "nnodes": "num_machines", "master_addr": "main_address",
    "master_port": "main_port", "main_process_ip": "main_address", "main_process_port": "main_port",
    "distributed_type": "mode", "gpu_ids": "gpus",
}


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    types_by_name = _field_types(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in types_by_name:
            synonym = SYNONYMS.get(str(key))
            if synonym in types_by_name:
                raise ConfigError(f"unknown config key '{prefix}{key}'; did you mean '{prefix}{synonym}'?")
            nearest = difflib.get_close_matches(str(key), list(types_by_name), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{nearest[0]}'?" if nearest else f"; valid keys: {', '.join(types_by_name)}"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
        kwargs[key] = _coerce(f"{prefix}{key}", value, types_by_name[key])
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parses `key.path=value` (the value read as YAML, so numbers, booleans and lists work)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key.path=value, got '{text}'; for example --set train.lr=1e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key.path=value, got '{text}'.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML reads 2e-4 as a string (it wants 2.0e-4); people write it the short way.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".e") else value
        except ValueError:
            pass
    return key.split("."), value


def apply_overrides(values: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = values
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text}: '{part}' is a value, not a group of settings.")
            node = child
        node[path[-1]] = value
    return values


def config_from_dict(values: dict[str, Any] | None, overrides: typing.Iterable[str] = ()) -> RunConfig:
    values = apply_overrides(dict(values or {}), overrides)
    return _build(RunConfig, values)


def load_config(path: str | os.PathLike, overrides: typing.Iterable[str] = ()) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; the wizard writes one at its review step.")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}; check the indentation and quotes there.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a UTF-8 text file.") from None
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of settings (model:, method:, ...), not a {type(values).__name__}.")
    return config_from_dict(values, overrides)


def describe_fields(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(key path, default, help) for every setting: used for `--help`-style listings and the wizard's tooltips."""
    rows = []
    for f in dataclasses.fields(cls):
        annotation = _field_types(cls)[f.name]
        if dataclasses.is_dataclass(annotation):
            rows.extend(describe_fields(annotation, prefix=f"{prefix}{f.name}."))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((f"{prefix}{f.name}", default, f.metadata.get("help", "")))
    return rows
