"""Run directories: starting the trainer process, finding runs, their state, cancelling.

The trainer runs in its own process session with its output in the run directory, so closing
the terminal or the wizard never stops it; status.json carries its pid so a new `lora-wizard`
finds a live run, and events.jsonl carries its whole history.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from core.config import RunConfig
from core.errors import UserError
from core.events import FINAL_TYPES, follow_events, read_events

STATUS_FILE = "status.json"
REMOTE_QUIET_S = 1800  # a run on another machine with no event for this long is taken for crashed
DEFAULT_ROOT = "runs"


@dataclass
class RunInfo:
    run_dir: Path
    state: str
    model: str
    method: str
    step: int
    max_steps: int
    updated: float
    loss: float | None = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own exited child not yet reaped) is not alive.
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def read_status(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def run_state(run_dir: str | os.PathLike) -> str:
    """pending | running | done | failed | cancelled | crashed."""
    run_dir = Path(run_dir)
    final = None
    for event in read_events(run_dir):
        if event["type"] in FINAL_TYPES:
            final = event["type"]
        elif event["type"] == "started":
            final = None  # a resumed run started again after an earlier end
    status = read_status(run_dir)
    if status and status.get("state") == "running":
        if status.get("host") not in (None, os.uname().nodename):
            # Trained on another machine (a multi-machine run on shared storage): its pid can't be checked
            # from here, so a run that wrote an event in the last half hour counts as running.
            newest = max([float(status.get("updated", 0))] + [e.get("time", 0) for e in read_events(run_dir)[-1:]])
            return final or ("running" if time.time() - newest < REMOTE_QUIET_S else "crashed")
        if _pid_alive(int(status.get("pid", -1))):
            return "running"
        return final or "crashed"
    if final:
        return final
    if status is None:
        return "pending"
    return status.get("state", "pending")


def prepare_run_dir(config: RunConfig, resume: bool = False) -> Path:
    """Creates the run directory and writes the resolved config; refuses to overwrite a previous run."""
    run_dir = Path(os.path.expanduser(config.output_dir))
    if run_dir.exists() and not resume:
        if any((run_dir / name).exists() for name in ("events.jsonl", "adapter", "checkpoints")):
            raise UserError(
                f"{run_dir} already holds a run; add --resume to continue it, or set output_dir to a new folder."
            )
    if resume and run_state(run_dir) == "running":
        raise UserError(f"{run_dir} is still training (pid {read_status(run_dir)['pid']}); attach with lora-wizard attach {run_dir}.")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserError(f"cannot write to {run_dir} ({error.strerror}); choose an output_dir you can write to.") from None
    config.save(run_dir / "config.yaml")
    return run_dir


def start_trainer(run_dir: Path, config: RunConfig, resume: bool = False) -> subprocess.Popen:
    """The trainer process, in its own session, with its output appended to trainer.log.

    More than one process (several GPUs, or distributed.num_processes on the CPU) goes through
    `accelerate launch` with the accelerate.yaml and launch.sh written into the run directory."""
    from core.distributed import launch_command, plan_for_run, write_launch_files

    plan = plan_for_run(config)
    if plan.num_machines > 1:
        raise UserError("a run over several machines is started on each machine with its launch-node.sh; "
                        f"write them with: lora-wizard cluster {run_dir / 'config.yaml'}")
    if plan.distributed:
        write_launch_files(run_dir, plan, config)
        command = launch_command(run_dir, resume=resume)
    else:
        command = [sys.executable, "-m", "core.train", str(run_dir)] + (["--resume"] if resume else [])
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    source_root = str(Path(__file__).resolve().parent.parent)
    token = _session_token()
    if token:
        env["HF_TOKEN"] = token  # a session-only token (no keyring) lives in this process: hand it down, never to disk
    env["PYTHONPATH"] = source_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log = open(run_dir / "trainer.log", "ab")
    try:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True, cwd=os.getcwd())
    finally:
        log.close()
    # status.json is written by the trainer itself, but a reader must see the pid before the trainer gets there.
    (run_dir / STATUS_FILE).write_text(json.dumps({"pid": process.pid, "state": "running", "host": os.uname().nodename,
                                                   "updated": time.time()}))
    return process


def _session_token() -> str | None:
    try:
        from core.hub import get_token

        token, source = get_token()
    except Exception:  # no token store is fine for local and public models
        return None
    return token if source == "session" else None


def start_training(config: RunConfig, resume: bool = False) -> Path:
    """Prepares the run directory and starts the trainer detached; returns at once with the run directory."""
    config.check_complete()
    run_dir = prepare_run_dir(config, resume=resume)
    start_trainer(run_dir, config, resume=resume)
    return run_dir


def cancel_run(run_dir: str | os.PathLike) -> bool:
    """Asks the trainer to checkpoint and stop (SIGTERM). False when it is not running."""
    status = read_status(run_dir)
    if not status or run_state(run_dir) != "running":
        return False
    try:
        os.kill(int(status["pid"]), signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def follow_run(run_dir: Path, process: subprocess.Popen | None = None, printer: Callable[[str], Any] | None = print,
               poll_s: float = 0.5) -> dict[str, Any]:
    """Prints the run's events as lines until it ends; Ctrl-C asks the trainer to checkpoint and stop."""
    from core.train import format_event

    offset = 0
    final: dict[str, Any] = {}
    cancel_sent = False
    while True:
        try:
            events, offset = follow_events(run_dir, offset)
            for event in events:
                if event["type"] == "started":
                    final = {}
                if printer:
                    line = format_event(event)
                    if line:
                        printer(line)
                if event["type"] in FINAL_TYPES:
                    final = event
            finished = process.poll() is not None if process else run_state(run_dir) != "running"
            if finished:
                events, offset = follow_events(run_dir, offset)
                for event in events:
                    if printer and (line := format_event(event)):
                        printer(line)
                    if event["type"] in FINAL_TYPES:
                        final = event
                if not final:
                    final = {"type": "failed", "reason": _reason_without_event(run_dir, process)}
                    if printer:
                        printer(f"failed: {final['reason']}")
                return final
            time.sleep(poll_s)
        except KeyboardInterrupt:
            if cancel_sent:
                raise
            cancel_sent = True
            if printer:
                printer("cancelling: saving a checkpoint first (Ctrl-C again to stop waiting; training then stops on its own)")
            if process:
                process.send_signal(signal.SIGTERM)
            else:
                cancel_run(run_dir)


def _reason_without_event(run_dir: Path, process: subprocess.Popen | None) -> str:
    """Why a trainer ended without writing its last event: a full disk, a kill, or what its log says."""
    try:
        stats = os.statvfs(run_dir)
        if stats.f_bavail * stats.f_frsize < 1024 * 1024:
            from core.train import latest_complete_checkpoint

            latest = latest_complete_checkpoint(run_dir)
            kept = f"{latest.name} is intact" if latest else "no checkpoint was complete yet"
            return (f"the disk holding {run_dir} is full; free space, then add --resume to continue ({kept})")
    except OSError:
        pass
    code = process.returncode if process else None
    if code is not None and code < 0:
        return f"the trainer was killed ({signal.Signals(-code).name}); add --resume to continue from the last checkpoint"
    return f"the trainer stopped without a result ({_log_tail(run_dir)})"


def _log_tail(run_dir: Path) -> str:
    try:
        lines = [line for line in (run_dir / "trainer.log").read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no trainer.log"
    return lines[-1][:300] if lines else "trainer.log is empty"


def list_runs(root: str | os.PathLike = DEFAULT_ROOT) -> list[RunInfo]:
    """Runs under `root` (folders with a config.yaml), running ones first, then newest first."""
    root = Path(os.path.expanduser(root))
    runs = []
    if not root.is_dir():
        return runs
    for config_path in root.glob("*/config.yaml"):
        run_dir = config_path.parent
        events = read_events(run_dir)
        steps = [e for e in events if e["type"] == "step"]
        model = method = "?"
        try:
            import yaml

            values = yaml.safe_load(config_path.read_text()) or {}
            model, method = str(values.get("model", "?")), str(values.get("method", "?"))
        except Exception:
            pass
        updated = max(config_path.stat().st_mtime, *(e["time"] for e in events[-1:]))
        last = steps[-1] if steps else {}
        runs.append(RunInfo(run_dir, run_state(run_dir), model, method, last.get("step", 0), last.get("max_steps", 0),
                            updated, last.get("loss")))
    runs.sort(key=lambda r: (r.state != "running", -r.updated))
    return runs


def runs_command(args) -> int:
    runs = list_runs(args.root or DEFAULT_ROOT)
    if args.json:
        print(json.dumps([{**r.__dict__, "run_dir": str(r.run_dir)} for r in runs], indent=2))
        return 0
    if not runs:
        print(f"no runs under {args.root or DEFAULT_ROOT}/; start one with lora-wizard (or lora-wizard train --demo).")
        return 0
    print(f"{'STATE':<10} {'STEP':>11} {'LOSS':>8}  {'METHOD':<10} {'MODEL':<40} RUN")
    for run in runs:
        loss = f"{run.loss:.4f}" if run.loss is not None else "-"
        step = f"{run.step}/{run.max_steps}" if run.max_steps else "-"
        print(f"{run.state:<10} {step:>11} {loss:>8}  {run.method:<10} {run.model[-40:]:<40} {run.run_dir}")
    return 0
