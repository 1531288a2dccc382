"""More than one GPU, and more than one machine, through accelerate.

The engine never starts processes of its own devising: for anything beyond one process it writes
an accelerate config into the run directory and starts the trainer with `accelerate launch`
(torchrun underneath), so a person can repeat the run by hand with the command in `launch.sh`.

- `plan_launch` decides single / DDP / FSDP and how many processes, from the config and the GPUs
  found (the estimator says whether the model fits on each GPU, or only sharded).
- `write_launch_files` writes `accelerate.yaml` and `launch.sh` into the run directory.
- `write_cluster_files` adds, for several machines, `launch-node.sh MACHINE_RANK` and a SLURM
  batch script that runs it on every node.

On a machine without CUDA the processes train on the CPU and talk over gloo (what the tests use);
with GPUs, one process per GPU over NCCL. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from core.config import AUTO, RunConfig
from core.errors import ConfigError
from core.vram import parallel_mode

ACCELERATE_CONFIG = "accelerate.yaml"
LAUNCH_SCRIPT = "launch.sh"
NODE_SCRIPT = "launch-node.sh"
SLURM_SCRIPT = "slurm.sbatch"

# FSDP settings for LoRA / QLoRA, as peft documents them for QLoRA + FSDP: whole decoder layers are
# the shards, only the (trainable) adapters need full gradients, and the 4-bit base is stored in the
# compute dtype so FSDP can flatten it with the rest (the engine sets bnb_4bit_quant_storage).
FSDP_CONFIG = {
    "fsdp_version": 1,
    "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
    "fsdp_backward_prefetch": "BACKWARD_PRE",
    "fsdp_cpu_ram_efficient_loading": True,
    "fsdp_forward_prefetch": False,
    "fsdp_offload_params": False,
    "fsdp_sharding_strategy": "FULL_SHARD",
    "fsdp_state_dict_type": "SHARDED_STATE_DICT",
    "fsdp_sync_module_states": True,
    "fsdp_use_orig_params": False,
}


@dataclass
class LaunchPlan:
    mode: str  # single | ddp | fsdp
    processes_per_machine: int
    num_machines: int = 1
    gpu_ids: list[int] | None = None  # None: no GPU (CPU processes)
    mixed_precision: str = "no"  # what accelerate is told: bf16 | fp16 | no (the trainer sets its own precision too)
    reason: str = ""
    per_gpu_gib: dict[str, float] = field(default_factory=dict)  # estimated peak per GPU, by mode

    @property
    def num_processes(self) -> int:
        return self.processes_per_machine * self.num_machines

    @property
    def distributed(self) -> bool:
        return self.num_processes > 1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "num_processes": self.num_processes}


def chosen_gpus(config: RunConfig, gpus: Sequence[Any]) -> list[Any]:
    """The GPUs the config asks for, among those found; a missing index is a one-line error."""
    wanted = config.distributed.gpus
    if wanted == "all":
        return list(gpus)
    found = {gpu.index: gpu for gpu in gpus}
    missing = [index for index in wanted if index not in found]
    if missing:
        have = ", ".join(str(index) for index in sorted(found)) or "none"
        raise ConfigError(f"distributed.gpus asks for GPU {missing[0]}, but this machine has GPUs {have}; "
                          "list indices from `nvidia-smi`, or use 'all'.")
    return [found[index] for index in wanted]


def plan_launch(config: RunConfig, gpus: Sequence[Any], per_gpu_gib: dict[str, float] | None = None) -> LaunchPlan:
    """How to start the trainer: one process, DDP or FSDP, and how many processes on each machine.

    `per_gpu_gib` maps "single" / "ddp" / "fsdp" to the estimator's peak per GPU (see
    `parallel_estimates`); with it, `mode: auto` picks DDP when a full copy fits on each GPU and FSDP
    when the model fits only sharded.
    """
    settings = config.distributed
    gpus = chosen_gpus(config, gpus)
    machines = settings.num_machines
    if gpus:
        processes = len(gpus) if settings.num_processes == AUTO else settings.num_processes
        if processes > len(gpus):
            raise ConfigError(f"distributed.num_processes is {processes} but {len(gpus)} GPU(s) are chosen; one "
                              "process drives one GPU, so use at most that many (or 'auto').")
        gpu_ids = [gpu.index for gpu in gpus][:processes]
        precision = "bf16" if all(gpu.bf16 for gpu in gpus) else "fp16"
        capacity = min(gpu.free_gib for gpu in gpus[:processes])
    else:
        processes = 1 if settings.num_processes == AUTO else settings.num_processes
        gpu_ids, precision, capacity = None, "no", None
    total = processes * machines
    estimates = dict(per_gpu_gib or {})
    mode = settings.mode
    if total == 1:
        if mode in ("ddp", "fsdp"):
            reason = f"{mode} asked for, but there is one process: training on one {'GPU' if gpus else 'CPU process'}"
        else:
            reason = "one GPU" if gpus else "no GPU: one process on the CPU"
        return LaunchPlan("single", 1, 1, gpu_ids, precision, reason, estimates)
    if mode == "single":
        return LaunchPlan("single", 1, 1, gpu_ids[:1] if gpu_ids else None, precision,
                          "single asked for: one process", estimates)
    if mode == AUTO:
        mode, fit = parallel_mode(estimates, capacity)
        where = f"{total} processes" if capacity is None else f"{total} GPUs"
        reason = {
            "fits-each": f"data parallel over {where}: a full copy fits on each",
            "fits-nowhere": f"data parallel over {where}; the model does not fit even sharded (see the estimate)",
            "fits-sharded": f"FSDP over {total} GPUs: the model fits only sharded ({estimates.get('fsdp', 0):.1f} GiB "
                            f"per GPU sharded vs {estimates.get('ddp', 0):.1f} GiB for a full copy)",
        }[fit]
    else:
        reason = f"{mode} asked for, over {total} {'GPUs' if gpus else 'CPU processes'}"
    if mode == "fsdp" and not gpus:
        raise ConfigError("distributed.mode fsdp needs CUDA GPUs; on the CPU use ddp (or single).")
    if mode == "fsdp" and config.method == "lora-8bit":
        raise ConfigError("FSDP cannot shard an 8-bit (LLM.int8) base; use qlora or lora with FSDP, or ddp for lora-8bit.")
    return LaunchPlan(mode, processes, machines, gpu_ids, precision, reason, estimates)


def accelerate_config(plan: LaunchPlan, config: RunConfig, machine_rank: int = 0) -> dict[str, Any]:
    """The accelerate config (what `accelerate config` would write) for this plan.

    Every multi-process run is launched as MULTI_GPU / FSDP, i.e. through torchrun; on a machine
    without CUDA each process then trains on the CPU over gloo (accelerate's own MULTI_CPU launcher
    needs MPI for more than one process)."""
    settings = config.distributed
    single_machine = plan.num_machines == 1
    values: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": {"single": "NO", "ddp": "MULTI_GPU", "fsdp": "FSDP"}[plan.mode],
        "num_machines": plan.num_machines,
        "machine_rank": machine_rank,
        "num_processes": plan.num_processes,
        "gpu_ids": ",".join(str(index) for index in plan.gpu_ids) if plan.gpu_ids else "all",
        "mixed_precision": plan.mixed_precision,
        "use_cpu": False,
        "downcast_bf16": "no",
        "main_training_function": "main",
        "rdzv_backend": "static",
        "same_network": True,
        # One machine: any free port (accelerate picks one), so two runs never collide.
        "main_process_port": 0 if single_machine else settings.main_port,
        "enable_cpu_affinity": False,
        "debug": False,
    }
    if not single_machine:
        values["main_process_ip"] = settings.main_address
    if plan.mode == "fsdp":
        values["fsdp_config"] = dict(FSDP_CONFIG)
    return values


def launch_command(run_dir: Path, resume: bool = False, config_file: str | None = None,
                   machine_rank: str | None = None, python: str | None = None) -> list[str]:
    """`python -m accelerate.commands.launch --config_file RUN/accelerate.yaml -m core.train RUN [--resume]`."""
    command = [python or sys.executable, "-m", "accelerate.commands.launch",
               "--config_file", config_file or str(run_dir / ACCELERATE_CONFIG)]
    if machine_rank is not None:
        command += ["--machine_rank", machine_rank]
    command += ["-m", "core.train", str(run_dir)]
    return command + (["--resume"] if resume else [])


def _script(lines: list[str]) -> str:
    return "\n".join(["#!/bin/sh", *lines]) + "\n"


def _write_executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def write_launch_files(run_dir: Path, plan: LaunchPlan, config: RunConfig) -> None:
    """accelerate.yaml, launch.sh (the same start, by hand) and launch.json (the plan, for the wizard)."""
    run_dir = Path(run_dir)
    (run_dir / ACCELERATE_CONFIG).write_text(
        f"# written by lora-wizard: {plan.reason}\n" + yaml.safe_dump(accelerate_config(plan, config), sort_keys=False))
    source_root = str(Path(__file__).resolve().parent.parent)
    command = launch_command(run_dir.resolve(), python=sys.executable)
    _write_executable(run_dir / LAUNCH_SCRIPT, _script([
        f"# Starts this run's trainer exactly as lora-wizard did ({plan.reason}).",
        "# Add --resume to continue from the latest complete checkpoint.",
        f"cd {shlex.quote(os.getcwd())}",
        f"export PYTHONPATH={shlex.quote(source_root)}${{PYTHONPATH:+:$PYTHONPATH}}",
        "exec " + shlex.join(command) + ' "$@"',
    ]))
    (run_dir / "launch.json").write_text(json.dumps(plan.to_dict(), indent=2))


def write_cluster_files(run_dir: Path, plan: LaunchPlan, config: RunConfig) -> list[Path]:
    """For several machines: accelerate.yaml, launch-node.sh MACHINE_RANK and slurm.sbatch.

    The run directory must be on a filesystem every machine sees (checkpoints and events are
    written there by rank 0 on machine 0; the others read the config and resume from it)."""
    run_dir = Path(run_dir)
    write_launch_files(run_dir, plan, config)
    source_root = str(Path(__file__).resolve().parent.parent)
    absolute = run_dir.resolve()
    node = launch_command(absolute, machine_rank="$MACHINE_RANK", python=sys.executable)
    node_text = " ".join(shlex.quote(part) if part != "$MACHINE_RANK" else '"$MACHINE_RANK"' for part in node)
    _write_executable(run_dir / NODE_SCRIPT, _script([
        f"# Run on each of the {plan.num_machines} machines: sh {NODE_SCRIPT} MACHINE_RANK (0 on "
        f"{config.distributed.main_address}, then 1, 2, ...).",
        f"# Each machine starts {plan.processes_per_machine} process(es); machine 0 listens on "
        f"{config.distributed.main_address}:{config.distributed.main_port}. Add --resume to continue.",
        "set -eu",
        'if [ "$#" -lt 1 ]; then echo "usage: $0 MACHINE_RANK [--resume]" >&2; exit 64; fi',
        'MACHINE_RANK=$1; shift',
        f"cd {shlex.quote(os.getcwd())}",
        f"export PYTHONPATH={shlex.quote(source_root)}${{PYTHONPATH:+:$PYTHONPATH}}",
        f"exec {node_text} \"$@\"",
    ]))
    gpus = f"#SBATCH --gpus-per-node={plan.processes_per_machine}" if plan.gpu_ids else "# (no GPUs: CPU processes)"
    _write_executable(run_dir / SLURM_SCRIPT, _script([
        f"#SBATCH --job-name=lora-wizard-{run_dir.name}",
        f"#SBATCH --nodes={plan.num_machines}",
        "#SBATCH --ntasks-per-node=1",
        gpus,
        f"#SBATCH --output={absolute}/slurm-%j.log",
        "# sbatch this file; each node runs launch-node.sh with its rank, machine 0 being the first node.",
        "set -eu",
        'MAIN=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"sed -i \"s/^main_process_ip: .*/main_process_ip: $MAIN/\" {shlex.quote(str(absolute / ACCELERATE_CONFIG))}",
        f"srun sh -c \"sh {shlex.quote(str(absolute / NODE_SCRIPT))} \\$SLURM_NODEID $*\"",
    ]))
    return [run_dir / ACCELERATE_CONFIG, run_dir / NODE_SCRIPT, run_dir / SLURM_SCRIPT]


def plan_for_run(config: RunConfig, gpus: Sequence[Any] | None = None) -> LaunchPlan:
    """The plan for this machine: GPUs found through NVML, per-GPU estimates when there is a choice to make."""
    from core.hardware import detect_gpus

    gpus = detect_gpus() if gpus is None else list(gpus)
    estimates: dict[str, float] = {}
    chosen = chosen_gpus(config, gpus)
    if len(chosen) > 1 and config.distributed.mode == AUTO:
        estimates = per_gpu_estimates(config, len(chosen))
    return plan_launch(config, gpus, estimates)


def per_gpu_estimates(config: RunConfig, processes: int) -> dict[str, float]:
    """Peak GiB per GPU for single / ddp / fsdp with the run's settings ({} when the model can't be sized)."""
    from core.vram import model_facts, parallel_estimates

    train = config.train
    batch = train.batch_size if isinstance(train.batch_size, int) else 4
    checkpointing = train.gradient_checkpointing if isinstance(train.gradient_checkpointing, bool) else True
    try:
        from core.model import resolve_token

        facts = model_facts(config.model, token=resolve_token(None, config.model), revision=config.revision)
    except Exception:  # the estimate is advice: without it, auto means DDP
        return {}
    rows = parallel_estimates(facts, config.method, processes, batch_size=batch, seq_len=config.data.max_length,
                              rank=config.lora.r, gradient_checkpointing=checkpointing, lora_dropout=config.lora.dropout)
    return {mode: row.peak_gib for mode, row in rows.items()}


def cluster_plan(config: RunConfig, machines: int, processes_per_machine: int | None, cpu: bool) -> LaunchPlan:
    """The plan for a job over several machines, made on any of them (or a login node without GPUs)."""
    if machines < 2:
        raise ConfigError("--machines must be at least 2; on one machine, lora-wizard train launches all its GPUs itself.")
    if processes_per_machine is None:
        if config.distributed.num_processes != AUTO:
            processes_per_machine = int(config.distributed.num_processes)
        elif not cpu:
            from core.hardware import detect_gpus

            processes_per_machine = len(detect_gpus()) or None
        if processes_per_machine is None:
            raise ConfigError("say how many processes each machine runs: --processes-per-machine N (one per GPU).")
    mode = "ddp" if config.distributed.mode in (AUTO, "single") else config.distributed.mode
    if mode == "fsdp" and cpu:
        raise ConfigError("distributed.mode fsdp needs CUDA GPUs; on the CPU use ddp.")
    gpu_ids = None if cpu else list(range(processes_per_machine))
    where = "CPU process(es)" if cpu else "GPU(s)"
    reason = f"{mode} over {machines} machines x {processes_per_machine} {where}"
    return LaunchPlan(mode, processes_per_machine, machines, gpu_ids, "no" if cpu else "bf16", reason)


def cluster_command(args) -> int:
    """`lora-wizard cluster CONFIG --machines N [--processes-per-machine P] [--main-address HOST] [--main-port P]`."""
    from core.config import load_config
    from core.runs import prepare_run_dir

    overrides = list(args.overrides) + [f"distributed.num_machines={args.machines}"]
    if args.main_address:
        overrides.append(f"distributed.main_address={args.main_address}")
    if args.main_port:
        overrides.append(f"distributed.main_port={args.main_port}")
    config = load_config(args.config, overrides)
    config.check_complete()
    plan = cluster_plan(config, args.machines, args.processes_per_machine, args.cpu)
    run_dir = prepare_run_dir(config, resume=args.resume)
    files = write_cluster_files(run_dir, plan, config)
    print(f"{plan.reason}; {plan.num_processes} processes in all. Written to {run_dir}:")
    for path in files:
        print(f"  {path}")
    print(f"The run directory must be on storage every machine sees. On machine 0 ({config.distributed.main_address}) "
          f"run: sh {run_dir / NODE_SCRIPT} 0; on the others: sh {run_dir / NODE_SCRIPT} 1, 2, ...")
    print(f"With SLURM: sbatch {run_dir / SLURM_SCRIPT}. Follow it from any machine that sees the run directory: lora-wizard attach {run_dir}")
    return 0
