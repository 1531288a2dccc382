"""The trainer: TRL's SFTTrainer on a PEFT model, reporting through events.jsonl.

`python -m core.train RUN_DIR [--resume]` is the trainer process (the engine starts it in its own
session so it outlives the terminal). `lora-wizard train CONFIG` starts that process and prints
one line per logged step from its events. `run_training` runs in-process (tests, benchmarks).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterable

from core.config import AUTO, RunConfig, load_config
from core.errors import UserError
from core.events import EventWriter, duration

log = logging.getLogger("lora_wizard.train")

# The caching allocator's default carves fixed-size segments that a training step's mix of sizes
# fragments (on a Qwen2.5-7B shape peak reserved ran up to 40% above peak allocated); expandable
# segments grow in place. Read by torch at its first CUDA allocation, so setting it here, before any
# model loads, is in time; a user's own PYTORCH_CUDA_ALLOC_CONF wins.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

CHECKPOINT_DONE_MARKER = "lora-wizard-complete"
STATUS_FILE = "status.json"
EFFECTIVE_BATCH = 16  # sequences per optimizer step when batch settings are auto


class CancelledBeforeTraining(Exception):
    """A cancel arrived while data or the model were still loading: nothing to checkpoint yet."""


_cancel_requested = False  # set by the trainer process's signal handler, also before training starts


def _request_cancel(signum, frame) -> None:
    global _cancel_requested
    _cancel_requested = True
    log.warning("received %s: stopping (a checkpoint is saved if training has started)", signal.Signals(signum).name)


def _check_cancel() -> None:
    if _cancel_requested:
        raise CancelledBeforeTraining()


def write_status(run_dir: Path, state: str, **fields: Any) -> None:
    status = {"pid": os.getpid(), "state": state, "host": os.uname().nodename, "updated": time.time(), **fields}
    temporary = run_dir / f".{STATUS_FILE}.tmp"
    temporary.write_text(json.dumps(status))
    os.replace(temporary, run_dir / STATUS_FILE)


def latest_complete_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint whose save finished (it carries our marker, written after everything else)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    complete = []
    for path in folder.glob("checkpoint-*"):
        suffix = path.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (path / CHECKPOINT_DONE_MARKER).exists() and (path / "trainer_state.json").exists():
            complete.append((int(suffix), path))
    return max(complete)[1] if complete else None


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def gpu_memory() -> list[dict[str, float]]:
    """Memory of the GPUs this process uses: all it sees alone, its own one when it is one rank of several."""
    import torch

    if not torch.cuda.is_available():
        return []
    gib = 1024**3
    rows = []
    indices = [torch.cuda.current_device()] if world_size() > 1 else range(torch.cuda.device_count())
    for index in indices:
        free, total = torch.cuda.mem_get_info(index)
        rows.append({
            "index": index,
            "used_gib": round((total - free) / gib, 3),
            "total_gib": round(total / gib, 3),
            "reserved_gib": round(torch.cuda.memory_reserved(index) / gib, 3),
            "max_reserved_gib": round(torch.cuda.max_memory_reserved(index) / gib, 3),
            "max_allocated_gib": round(torch.cuda.max_memory_allocated(index) / gib, 3),
        })
        if world_size() > 1:
            rows[-1]["rank"] = int(os.environ.get("RANK", "0"))
    return rows


def _all_ranks_gpu_memory() -> list[dict[str, float]]:
    """Every rank's GPU memory, gathered to all (called by every rank at the same point)."""
    rows = gpu_memory()
    if world_size() == 1:
        return rows
    import torch.distributed as dist

    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, rows)
    return [row for rank_rows in gathered for row in rank_rows or []]


def _any_rank(flag: bool, device) -> bool:
    """True on every rank when `flag` is true on any: ranks must stop at the same step, or the others hang."""
    if world_size() == 1:
        return flag
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def _barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def _events_callback_class():
    from transformers import TrainerCallback

    class EventsCallback(TrainerCallback):
        """Writes step / eval / checkpoint events; turns a cancel request into checkpoint-and-stop."""

        def __init__(self, events: EventWriter, is_main: bool):
            self.events = events
            self.is_main = is_main
            self.cancel_requested = False
            self.started = time.monotonic()
            self.last_time = None
            self.last_tokens = 0
            self.last_step = 0
            self.step_times: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.monotonic()
            self.last_time = self.started
            self.last_tokens = state.num_input_tokens_seen
            self.last_step = state.global_step

        def on_step_end(self, args, state, control, **kwargs):
            # A cancel reaches rank 0 (the pid in status.json); all ranks learn it at the same step.
            if _any_rank(_cancel_requested or self.cancel_requested, args.device):
                self.cancel_requested = True
            if self.cancel_requested:
                control.should_save = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            memory = _all_ranks_gpu_memory()  # every rank logs the training loss at the same step
            if not self.is_main:
                return
            now = time.monotonic()
            steps = max(state.global_step - self.last_step, 1)
            seconds = now - (self.last_time or now)
            tokens = state.num_input_tokens_seen - self.last_tokens
            self.step_times.append(seconds / steps)
            self.step_times = self.step_times[-20:]
            per_step = sorted(self.step_times)[len(self.step_times) // 2]
            remaining = max(state.max_steps - state.global_step, 0)
            self.events.write(
                "step",
                step=state.global_step,
                max_steps=state.max_steps,
                epoch=round(state.epoch or 0.0, 4),
                loss=logs.get("loss"),
                lr=logs.get("learning_rate"),
                grad_norm=logs.get("grad_norm"),
                tokens_per_second=round(tokens / seconds, 1) if seconds > 0 else None,
                tokens_seen=state.num_input_tokens_seen,
                elapsed_s=round(now - self.started, 2),
                eta_s=round(per_step * remaining, 1),
                gpu_memory=memory,
            )
            self.last_time, self.last_tokens, self.last_step = now, state.num_input_tokens_seen, state.global_step

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if self.is_main and metrics:
                self.events.write("eval", step=state.global_step, eval_loss=metrics.get("eval_loss"))

        def on_save(self, args, state, control, **kwargs):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            _barrier()  # every rank's part (its RNG state, FSDP shards) is on disk before the marker
            if self.is_main and path.is_dir():
                # The marker is the last file written: a checkpoint without it (a kill mid-save) is never resumed from.
                marker = path / CHECKPOINT_DONE_MARKER
                with open(marker, "w") as stream:
                    stream.write(str(state.global_step))
                    stream.flush()
                    os.fsync(stream.fileno())
                self.events.write("checkpoint", step=state.global_step, path=str(path))

    return EventsCallback


def resolve_auto_settings(config: RunConfig, lengths: list[int] | None, device: str) -> dict[str, Any]:
    """Concrete batch size, accumulation and checkpointing for settings left at `auto`."""
    train = config.train
    chosen: dict[str, Any] = {}
    planned: dict[str, Any] | None = None
    needs_plan = AUTO in (train.batch_size, train.grad_accum, train.gradient_checkpointing)
    if needs_plan and device == "cuda":
        try:
            from core.hardware import detect_gpus
            from core.vram import fastest_settings

            gpus = detect_gpus()
            gpu_gib = min(g.free_gib for g in gpus) if gpus else None
            facts, common = _planner_inputs(config)
            planned = fastest_settings(facts, config.method, gpu_gib, token_lengths=lengths,
                                       max_length=config.data.max_length, packing=config.data.packing, **common)
        except Exception as error:  # the estimator is advice; training goes on with safe settings
            log.warning("could not plan settings with the estimator (%s); using safe defaults", error)
    if planned is None:
        planned = {"batch_size": 4 if device == "cuda" else 2, "gradient_checkpointing": device == "cuda"}
    batch_size = planned["batch_size"] if train.batch_size == AUTO else train.batch_size
    chosen["batch_size"] = batch_size
    if train.grad_accum == AUTO:
        # The effective batch is global: with several processes each accumulates its share.
        accum = planned.get("grad_accum") or max(1, EFFECTIVE_BATCH // batch_size)
        chosen["grad_accum"] = max(1, accum // world_size())
    else:
        chosen["grad_accum"] = train.grad_accum
    gc = planned.get("gradient_checkpointing", False) if train.gradient_checkpointing == AUTO else train.gradient_checkpointing
    chosen["gradient_checkpointing"] = bool(gc)
    return chosen


def _attn_implementation(config: RunConfig, device: str) -> str:
    if config.train.attn_implementation == "varlen":
        from core import attention

        return attention.register()
    if config.train.attn_implementation != AUTO:
        return config.train.attn_implementation
    if config.data.packing:
        from core import attention

        return attention.register()
    return "sdpa"


def _use_liger(config: RunConfig, device: str) -> bool:
    if config.train.liger_kernels is False:
        return False
    if device != "cuda":
        if config.train.liger_kernels is True:
            log.warning("Liger kernels need a CUDA GPU; training without them.")
        return False
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        if config.train.liger_kernels is True:
            raise UserError("train.liger_kernels is on but liger-kernel is not installed; pip install liger-kernel.")
        return False
    return True


def oom_advice(config: RunConfig, settings: dict[str, Any], capacity_gib: float | None = None,
               lengths: list[int] | None = None) -> tuple[str, dict[str, Any]]:
    """One line of advice and the config overrides that apply it, for an out-of-memory failure.

    With the GPU's usable memory known, the estimator picks the fastest settings that fit it (smaller
    micro-batch, checkpointing, shorter rows; QLoRA when nothing else fits); without it, or when the
    estimator thinks the failed settings fit, a step down: halve the micro-batch, then checkpointing."""
    if capacity_gib:
        try:
            planned = _estimator_advice(config, settings, capacity_gib, lengths)
        except Exception as error:  # advice must never hide the OOM itself
            log.warning("the estimator could not plan settings for %.1f GiB (%s)", capacity_gib, error)
            planned = None
        if planned:
            return planned
    if settings["batch_size"] > 1:
        smaller = max(1, settings["batch_size"] // 2)
        return (f"halve the micro-batch to {smaller} (accumulation doubled to keep the effective batch)",
                {"train.batch_size": smaller, "train.grad_accum": settings["grad_accum"] * 2})
    if not settings["gradient_checkpointing"]:
        return "turn gradient checkpointing on", {"train.gradient_checkpointing": True}
    if config.method != "qlora":
        return "switch to QLoRA (4-bit base)", {"method": "qlora"}
    return (f"shorten data.max_length to {max(128, config.data.max_length // 2)}",
            {"data.max_length": max(128, config.data.max_length // 2)})


def _planner_inputs(config: RunConfig) -> tuple[Any, dict[str, Any]]:
    """The model's facts and the estimator's settings of this run (rank, Liger as `auto` resolves it, dropout)."""
    from core.model import resolve_token
    from core.vram import model_facts

    facts = model_facts(config.model, token=resolve_token(None, config.model), revision=config.revision)
    liger = None if config.train.liger_kernels == AUTO else bool(config.train.liger_kernels)
    return facts, {"rank": config.lora.r, "liger": liger, "lora_dropout": config.lora.dropout}


def _estimator_advice(config: RunConfig, settings: dict[str, Any], capacity_gib: float,
                      lengths: list[int] | None) -> tuple[str, dict[str, Any]] | None:
    from core.vram import estimate, examples_per_row, fastest_settings

    facts, common = _planner_inputs(config)
    failed = estimate(facts, config.method, settings["batch_size"], config.data.max_length,
                      gradient_checkpointing=settings["gradient_checkpointing"], **common)
    # Keep the failed run's effective batch: its micro-batch counts packed rows, the planner counts examples.
    per_row = examples_per_row(lengths, config.data.max_length, config.data.packing)
    examples = max(1, round(settings["batch_size"] * settings["grad_accum"] * per_row))
    for method in dict.fromkeys([config.method, "qlora"]):
        planned = fastest_settings(facts, method, capacity_gib, token_lengths=lengths, max_length=config.data.max_length,
                                   packing=config.data.packing, target_examples=examples, **common)
        if planned["fits"] not in ("fits", "tight") or planned["peak_gib"] >= failed.peak_gib:
            continue
        overrides: dict[str, Any] = {"train.batch_size": planned["batch_size"], "train.grad_accum": planned["grad_accum"],
                                     "train.gradient_checkpointing": planned["gradient_checkpointing"]}
        change = [f"micro-batch {planned['batch_size']} x {planned['grad_accum']} accumulation",
                  f"gradient checkpointing {'on' if planned['gradient_checkpointing'] else 'off'}"]
        if planned["max_length"] < config.data.max_length:
            overrides["data.max_length"] = planned["max_length"]
            change.append(f"max_length {planned['max_length']}")
        if method != config.method:
            overrides["method"] = method
            change.insert(0, "QLoRA (4-bit base)")
        return (f"use {', '.join(change)}: estimated {planned['peak_gib']:.1f} GiB of the {capacity_gib:.1f} GiB "
                "this GPU gave the run", overrides)
    return None


def _usable_gpu_gib() -> float | None:
    """GPU memory this process could have used: what it holds plus what is free, within torch's
    per-process memory fraction when one is set."""
    import torch

    if not torch.cuda.is_available():
        return None
    device = torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(device)
    usable = free + torch.cuda.memory_reserved(device)
    fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda _device: 1.0)(device)
    return min(usable, fraction * total) / 1024**3


def _out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or torch's CPU allocator failing (a RuntimeError)."""
    import torch

    text = str(error).lower()
    return (isinstance(error, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in text
            or "can't allocate memory" in text or "cannot allocate memory" in text)


def run_training(config: RunConfig, run_dir: str | os.PathLike, resume: bool = False,
                 extra_callbacks: Iterable[Any] = (), install_signal_handlers: bool = False) -> dict[str, Any]:
    """Trains `config` into `run_dir`; returns the final event. Never raises for a user error or an OOM:
    those become a `failed` event (the caller decides the exit code)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    is_main = int(os.environ.get("RANK", "0")) == 0
    events = EventWriter(run_dir)
    if is_main:
        config.save(run_dir / "config.yaml")
        write_status(run_dir, "running")
    settings: dict[str, Any] = {}
    callback = None
    try:
        final = _train(config, run_dir, resume, events, is_main, settings, extra_callbacks,
                       install_signal_handlers, holder := {})
        callback = holder.get("callback")
    except CancelledBeforeTraining:
        fields = {"step": 0, "max_steps": None, "checkpoint": None,
                  "resume_command": f"lora-wizard train {run_dir / 'config.yaml'} --resume"}
        final = events.write("cancelled", **fields) if is_main else {"type": "cancelled", **fields}
    except UserError as error:
        final = events.write("failed", reason=str(error)) if is_main else {"type": "failed", "reason": str(error)}
    except Exception as error:  # an OOM or a bug: the run ends as failed with one line; the traceback goes to the log
        import torch

        log.error("training failed:\n%s", traceback.format_exc())
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            latest = latest_complete_checkpoint(run_dir)
            kept = f"the last complete checkpoint ({latest.name}) is kept" if latest else "no complete checkpoint yet"
            fields = {"reason": f"the disk is full ({error.filename or run_dir}); free space, then resume with "
                                f"lora-wizard train {run_dir / 'config.yaml'} --resume ({kept})"}
        elif _out_of_memory(error):
            on_gpu = isinstance(error, torch.OutOfMemoryError) or "CUDA" in str(error)
            if settings:
                capacity = _usable_gpu_gib() if on_gpu else None
                advice, overrides = oom_advice(config, settings, capacity, holder.get("lengths"))
            else:
                advice, overrides = "use QLoRA or a smaller micro-batch", {}
            reason = "out of GPU memory" if on_gpu else "out of CPU memory"
            fields = {"reason": f"{reason}; {advice}", "advice": advice, "suggested_overrides": overrides}
        else:
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            fields = {"reason": f"{type(error).__name__}: {first} (full traceback in trainer.log)"}
        final = events.write("failed", **fields) if is_main else {"type": "failed", **fields}
    if is_main:
        write_status(run_dir, final["type"])
    del callback
    return final


def _train(config, run_dir, resume, events, is_main, settings, extra_callbacks, install_signal_handlers, holder):
    from core.data import ensure_chat_template, load_dataset_for, split_train_eval, token_lengths
    from core.model import load_for_training, load_tokenizer, precision_for

    config.check_complete()
    started = time.monotonic()
    checkpoint = None
    if resume:
        checkpoint = latest_complete_checkpoint(run_dir)
        if checkpoint is None:
            log.warning("no complete checkpoint in %s; starting from the beginning", run_dir)

    # Data first: a bad dataset is reported before minutes of model loading.
    data = load_dataset_for(config.data)
    _check_cancel()
    tokenizer = load_tokenizer(config.model, config.revision, None, config.trust_remote_code)
    template_note = ensure_chat_template(tokenizer)
    lengths = token_lengths(tokenizer, data.examples)
    truncated = sum(length > config.data.max_length for length in lengths)
    train_set, eval_set = split_train_eval(data.examples, config.data, config.train.seed)

    precision = precision_for(config.method)
    settings.update(resolve_auto_settings(config, lengths, precision.device))
    holder["lengths"] = lengths  # for the estimator's advice should this run out of memory
    notes = [data.detected] + ([template_note] if template_note else [])
    if truncated:
        notes.append(f"{truncated} of {len(lengths)} examples are longer than max_length {config.data.max_length} and will be truncated.")
    if data.problem_count:
        notes.append(f"{data.problem_count} rows skipped (first: {data.problems[0]}).")
    if is_main:
        events.write(
            "started", model=config.model, method=config.method, format=data.format, rows_total=data.rows_total,
            rows_used=data.rows_used, rows_skipped=data.problem_count, problems=data.problems,
            train_examples=len(train_set), eval_examples=len(eval_set) if eval_set is not None else 0,
            truncated=truncated, max_length=config.data.max_length, notes=notes, resumed_from=str(checkpoint) if checkpoint else None,
            device=precision.device, dtype=precision.name, pid=os.getpid(), world_size=world_size(), **settings,
        )
        for note in notes:
            log.info(note)

    attn = _attn_implementation(config, precision.device)
    # Seed before the adapter exists: LoRA's A matrices are drawn at creation, before the Trainer seeds.
    from transformers import set_seed

    set_seed(config.train.seed)
    model, _ = load_for_training(config, gradient_checkpointing=settings["gradient_checkpointing"], attn_implementation=attn)
    model.print_trainable_parameters()
    _check_cancel()

    from trl import SFTConfig, SFTTrainer

    train = config.train
    optimizer = train.optimizer
    if optimizer == AUTO:
        optimizer = "adamw_torch_fused" if precision.device == "cuda" else "adamw_torch"
    eval_steps = train.eval_steps or train.save_steps
    conversational = data.format in ("alpaca", "messages")
    args = SFTConfig(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps if train.max_steps is not None else -1,
        per_device_train_batch_size=settings["batch_size"],
        per_device_eval_batch_size=settings["batch_size"],
        gradient_accumulation_steps=settings["grad_accum"],
        learning_rate=train.lr,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_ratio,
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        optim=optimizer,
        bf16=precision.bf16,
        fp16=precision.fp16,
        use_cpu=precision.device == "cpu",
        gradient_checkpointing=settings["gradient_checkpointing"],
        gradient_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=train.logging_steps,
        save_strategy="steps",
        save_steps=train.save_steps,
        save_total_limit=train.save_total_limit,
        eval_strategy="steps" if eval_set is not None else "no",
        eval_steps=eval_steps,
        seed=train.seed,
        data_seed=train.seed,
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        max_length=config.data.max_length,
        packing=config.data.packing,
        packing_strategy="bfd",
        completion_only_loss=config.data.completion_only_loss if conversational else None,
        use_liger_kernel=_use_liger(config, precision.device),
        dataset_num_proc=None,
        dataloader_num_workers=0,
        save_only_model=False,
        ddp_find_unused_parameters=False,  # every adapter gets a gradient each step
    )
    callback = _events_callback_class()(events, is_main)
    holder["callback"] = callback
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        callbacks=[callback, *extra_callbacks],
    )

    fsdp_plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if fsdp_plugin is not None:
        # peft's wrap policy: decoder layers are the shards, the trainable adapters get their own units.
        from peft.utils.other import fsdp_auto_wrap_policy

        fsdp_plugin.auto_wrap_policy = fsdp_auto_wrap_policy(trainer.model)

    kernels = {"attention": attn, "liger": bool(args.use_liger_kernel), "optimizer": optimizer}
    previous_handlers = {}
    if install_signal_handlers:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous_handlers[signum] = signal.signal(signum, _request_cancel)
    try:
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    # Liger patches forward methods in place when training starts (class names stay): count the norms
    # whose forward it replaced, so the done event says whether its kernels really ran.
    kernels["liger_patched_norms"] = sum(1 for m in trainer.model.modules()
                                         if type(m).__name__.endswith("RMSNorm") and "forward" in vars(m))
    log.info("kernels: %s", kernels)

    state = trainer.state
    if callback.cancel_requested and state.global_step < state.max_steps:
        latest = latest_complete_checkpoint(run_dir)
        if not is_main:
            return {"type": "cancelled"}
        return events.write("cancelled", step=state.global_step, max_steps=state.max_steps,
                            checkpoint=str(latest) if latest else None,
                            resume_command=f"lora-wizard train {run_dir / 'config.yaml'} --resume")

    adapter_dir = run_dir / "adapter"
    if fsdp_plugin is not None:
        # Gathering the sharded adapter is a collective: every rank takes part, rank 0 writes.
        fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        trainer.save_model(str(run_dir / "adapter.fsdp"))
        if is_main:
            save_adapter(trainer, tokenizer, config, adapter_dir, output.training_loss, state.global_step,
                         saved=run_dir / "adapter.fsdp")
        _barrier()
    elif is_main:
        save_adapter(trainer, tokenizer, config, adapter_dir, output.training_loss, state.global_step)
    if is_main:
        return events.write("done", step=state.global_step, max_steps=state.max_steps, adapter_dir=str(adapter_dir),
                            kernels=kernels,
                            train_loss=output.training_loss, runtime_s=round(time.monotonic() - started, 1))
    return {"type": "done"}


def save_adapter(trainer, tokenizer, config: RunConfig, adapter_dir: Path, train_loss: float, steps: int,
                 saved: Path | None = None) -> None:
    """The PEFT adapter with its tokenizer, chat template and a model card (no token, ever).

    `saved`: a folder the trainer already wrote the adapter into (FSDP gathers it collectively)."""
    temporary = saved or adapter_dir.with_name(adapter_dir.name + ".partial")
    if saved is None:
        trainer.model.save_pretrained(str(temporary))
    tokenizer.save_pretrained(str(temporary))
    (temporary / "README.md").write_text(model_card(config, train_loss, steps))
    if adapter_dir.exists():
        import shutil

        shutil.rmtree(adapter_dir)
    os.replace(temporary, adapter_dir)


def model_card(config: RunConfig, train_loss: float | None, steps: int) -> str:
    base = config.model if not os.path.isdir(config.model) else Path(config.model).name
    method = {"lora": "LoRA on a 16-bit base", "lora-8bit": "LoRA on an 8-bit (LLM.int8) base",
              "qlora": "QLoRA on a 4-bit NF4 double-quantized base"}[config.method]
    loss = f"{train_loss:.4f}" if isinstance(train_loss, (int, float)) and math.isfinite(train_loss) else "n/a"
    data = config.data.path if not os.path.exists(config.data.path) else Path(config.data.path).name
    return f"""---
base_model: {base}
library_name: peft
tags: [lora, {config.method}, lora-wizard, trl, sft]
---

# {base} fine-tuned with lora-wizard

{method}, rank {config.lora.r}, alpha {config.lora.alpha}, dropout {config.lora.dropout}, target modules
{config.lora.target_modules}{", DoRA" if config.lora.use_dora else ""}{", rsLoRA" if config.lora.use_rslora else ""}.

- Data: {data} ({config.data.format} format), max length {config.data.max_length}
- Training: {steps} steps, learning rate {config.train.lr}, final train loss {loss}

```python
from peft import AutoPeftModelForCausalLM
model = AutoPeftModelForCausalLM.from_pretrained("path/to/this/adapter")
```
"""


def _configure_logging(run_dir: Path | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers)


def trainer_main(argv: list[str] | None = None) -> int:
    """The trainer process: `python -m core.train RUN_DIR [--resume]`; output goes to RUN_DIR/trainer.log."""
    parser = argparse.ArgumentParser(prog="python -m core.train")
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    # From the first moment: a cancel while imports, data or the model are loading ends as `cancelled`.
    signal.signal(signal.SIGTERM, _request_cancel)
    signal.signal(signal.SIGINT, _request_cancel)
    _configure_logging(run_dir)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # trainer.log is for people (and the wizard's log pane): no progress bars redrawn line by line.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning")
    # bitsandbytes logs "inputs will be cast to float16" on every fp32 (CPU) 8-bit forward: not news, every step.
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass
    try:
        config = load_config(run_dir / "config.yaml")
    except UserError as error:
        EventWriter(run_dir).write("failed", reason=str(error))
        write_status(run_dir, "failed")
        return 2
    final = run_training(config, run_dir, resume=args.resume, install_signal_handlers=True)
    if final["type"] == "cancelled" and world_size() > 1:
        # Under torchrun a non-zero exit is a worker failure: it would print a ChildFailedError traceback
        # into trainer.log (the wizard's log pane) after a clean cancel. The cancelled event says it all.
        return 0
    return {"done": 0, "cancelled": 130}.get(final["type"], 1)


def format_event(event: dict[str, Any]) -> str | None:
    """One progress line for the CLI."""
    kind = event["type"]
    if kind == "step":
        parts = [f"step {event['step']}/{event['max_steps']}"]
        if event.get("loss") is not None:
            parts.append(f"loss {event['loss']:.4f}")
        if event.get("lr") is not None:
            parts.append(f"lr {event['lr']:.2e}")
        if event.get("grad_norm") is not None:
            parts.append(f"grad {event['grad_norm']:.3f}")
        if event.get("tokens_per_second"):
            parts.append(f"{event['tokens_per_second']:,.0f} tok/s")
        for gpu in event.get("gpu_memory") or []:
            parts.append(f"gpu{gpu['index']} {gpu['max_reserved_gib']:.1f}/{gpu['total_gib']:.0f} GiB")
        if event.get("eta_s") is not None:
            parts.append(f"eta {duration(event['eta_s'])}")
        return " | ".join(parts)
    if kind == "started":
        processes = event.get("world_size") or 1
        where = f"{processes} processes on {event['device']}" if processes > 1 else event["device"]
        lines = [f"training {event['model']} with {event['method']} on {where} ({event['dtype']}): "
                 f"{event['train_examples']} train / {event['eval_examples']} eval examples, micro-batch "
                 f"{event['batch_size']} x {event['grad_accum']}, gradient checkpointing "
                 f"{'on' if event['gradient_checkpointing'] else 'off'}"]
        lines += event.get("notes", [])
        if event.get("resumed_from"):
            lines.append(f"resuming from {event['resumed_from']}")
        return "\n".join(lines)
    if kind == "eval":
        return f"eval at step {event['step']}: loss {event['eval_loss']:.4f}" if event.get("eval_loss") is not None else None
    if kind == "checkpoint":
        return f"checkpoint saved at step {event['step']}"
    if kind == "done":
        return f"done in {duration(event['runtime_s'])}: adapter saved to {event['adapter_dir']}"
    if kind == "cancelled":
        return f"cancelled at step {event['step']}; resume with: {event['resume_command']}"
    if kind == "failed":
        return f"failed: {event['reason']}"
    return None


def train_command(args) -> int:
    """`lora-wizard train CONFIG [--set k=v] [--resume] [--demo]`."""
    from core.config import load_config
    from core.runs import follow_run, prepare_run_dir, start_trainer

    if args.demo:
        from core.demo import demo_config

        config = demo_config(args.overrides)
    elif args.config:
        config = load_config(args.config, args.overrides)
    else:
        raise UserError("give a run config (lora-wizard train CONFIG.yaml) or --demo to train the built-in demo.")
    config.check_complete()
    run_dir = prepare_run_dir(config, resume=args.resume)
    process = start_trainer(run_dir, config, resume=args.resume)
    print(f"run directory: {run_dir} (trainer pid {process.pid}; log: {run_dir / 'trainer.log'})", flush=True)
    if args.detach:
        print(f"training in the background; follow it with: lora-wizard attach {run_dir}")
        return 0
    final = follow_run(run_dir, process, printer=None if args.quiet else print)
    return {"done": 0, "cancelled": 130}.get(final.get("type"), 1)


if __name__ == "__main__":
    sys.exit(trainer_main())
