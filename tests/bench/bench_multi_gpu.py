"""More than one GPU through the project's own launch (issue 8): DDP speed-up and FSDP on capped cards.

    # DDP: one GPU vs two, lora and qlora, Llama-3-8B shape, one command:
    python tests/bench/bench_multi_gpu.py --shape llama-3-8b --methods lora,qlora --gpus 1,2 --out $OUT
    # FSDP: a model that does not fit one (capped) card trains across two:
    python tests/bench/bench_multi_gpu.py --shape llama-3-8b --methods lora --gpus 2 --mode fsdp --cap-gib 24 --out $OUT
    # The same orchestration on CPU processes with the demo model (checks this script without a GPU):
    python tests/bench/bench_multi_gpu.py --cpu-smoke --out /tmp/bench-multi

Every case is `lora-wizard train CONFIG` with `distributed.gpus` set, i.e. exactly what a user
gets: accelerate launch, rank-0 events. Tokens/s come from the step events after warm-up
(global real tokens: the trainer gathers them across ranks); peak memory per rank from the step
events' gpu_memory (every rank reports); the estimator's per-GPU figure is printed beside it.
`--cap-gib` emulates smaller cards with torch.cuda.set_per_process_memory_fraction in every
process (through a sitecustomize.py on PYTHONPATH), and the estimator plans against that size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))

SITECUSTOMIZE = """
import os
cap = os.environ.get("LORA_WIZARD_BENCH_CAP_GIB")
if cap and os.environ.get("LOCAL_RANK") is not None:
    import torch
    rank = int(os.environ["LOCAL_RANK"])
    total = torch.cuda.get_device_properties(rank).total_memory
    torch.cuda.set_per_process_memory_fraction(float(cap) * 1024**3 / total, rank)
"""


def case_config(args, method: str, gpus: int, model: str, data: str, run_dir: Path) -> dict:
    train = {"max_steps": args.warmup + args.steps, "batch_size": args.batch_size, "grad_accum": 1,
             "save_steps": 10_000, "logging_steps": 1, "lr": 2e-4}
    distributed: dict = {"gpus": list(range(gpus)), "mode": args.mode}
    if args.cpu_smoke:
        train.update(batch_size=8, max_steps=args.warmup + args.steps)
        distributed = {"num_processes": gpus, "mode": "ddp" if gpus > 1 else "single"}
    return {"model": model, "method": method, "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
            "data": {"path": data, "max_length": 512 if not args.cpu_smoke else 128, "eval_fraction": 0.0},
            "train": train, "distributed": distributed, "output_dir": str(run_dir)}


def measure(run_dir: Path, warmup: int) -> dict:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    final = events[-1]
    steps = [e for e in events if e["type"] == "step"]
    started = next((e for e in events if e["type"] == "started"), {})
    result: dict = {"final": final["type"], "world_size": started.get("world_size"),
                    "batch_size": started.get("batch_size"), "gradient_checkpointing": started.get("gradient_checkpointing")}
    if final["type"] != "done":
        result["reason"] = final.get("reason")
        return result
    timed = steps[warmup:]
    if len(timed) >= 2:
        seconds = timed[-1]["elapsed_s"] - steps[warmup - 1]["elapsed_s"] if warmup else timed[-1]["elapsed_s"]
        tokens = timed[-1]["tokens_seen"] - (steps[warmup - 1]["tokens_seen"] if warmup else 0)
        result["tokens_per_s"] = round(tokens / seconds, 1)
        per_step = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(timed, timed[1:])]
        result["median_step_s"] = round(statistics.median(per_step), 4)
    peaks: dict[str, float] = {}
    for event in steps:
        for row in event.get("gpu_memory") or []:
            key = str(row.get("rank", row["index"]))
            peaks[key] = max(peaks.get(key, 0.0), row["max_reserved_gib"])
    result["peak_reserved_gib_per_rank"] = peaks
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="llama-3-8b")
    parser.add_argument("--methods", default="lora,qlora")
    parser.add_argument("--gpus", default="1,2", help="GPU counts to run, e.g. 1,2")
    parser.add_argument("--mode", default="auto", choices=["auto", "ddp", "fsdp"])
    parser.add_argument("--cap-gib", type=float, help="emulate cards of this many GiB")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--models", default="/tmp/shapes")
    parser.add_argument("--cpu-smoke", action="store_true")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()

    import yaml

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(f"/tmp/bench-multi-{os.getpid()}")
    work.mkdir(parents=True)
    env = dict(os.environ)
    if args.cpu_smoke:
        from core.demo import demo_config

        demo = demo_config([])
        model, data, methods = demo.model, demo.data.path, ["lora"]
    else:
        from shapes import SHAPES, build_shaped_model, synthetic_rows, write_rows

        model = str(build_shaped_model(args.shape, Path(args.models) / args.shape))
        data = str(write_rows(synthetic_rows(args.rows, SHAPES[args.shape]["vocab_size"]), work / "data.jsonl"))
        methods = args.methods.split(",")
    if args.cap_gib:
        (work / "site").mkdir()
        (work / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env["PYTHONPATH"] = os.pathsep.join([str(work / "site"), str(REPO), env.get("PYTHONPATH", "")])
        env["LORA_WIZARD_BENCH_CAP_GIB"] = str(args.cap_gib)

    results = []
    for method in methods:
        for gpus in [int(n) for n in args.gpus.split(",")]:
            run_dir = work / f"{method}-{gpus}"
            config = case_config(args, method, gpus, model, data, run_dir)
            path = work / f"{method}-{gpus}.yaml"
            path.write_text(yaml.safe_dump(config))
            started = time.time()
            process = subprocess.run([sys.executable, "-m", "core.cli", "train", str(path), "--quiet"], cwd=REPO,
                                     capture_output=True, text=True, env=env)
            row = {"shape": "demo" if args.cpu_smoke else args.shape, "method": method, "gpus": gpus,
                   "mode": args.mode, "cap_gib": args.cap_gib, "wall_s": round(time.time() - started, 1),
                   "exit": process.returncode}
            row.update(measure(run_dir, args.warmup) if (run_dir / "events.jsonl").exists()
                       else {"final": "no events", "reason": process.stderr.strip()[-300:]})
            launch = run_dir / "launch.json"
            if launch.exists():
                plan = json.loads(launch.read_text())
                row.update(plan_mode=plan["mode"], plan_reason=plan["reason"], estimate_per_gpu_gib=plan["per_gpu_gib"])
            if not args.cpu_smoke:
                from core.config import config_from_dict
                from core.distributed import per_gpu_estimates

                row["estimates_gib"] = per_gpu_estimates(config_from_dict(config), gpus)
            (out / f"trainer-{method}-{gpus}.log").write_text((run_dir / "trainer.log").read_text()[-200_000:]
                                                               if (run_dir / "trainer.log").exists() else "")
            results.append(row)
            print(json.dumps(row), flush=True)
            (out / "bench-multi-gpu.json").write_text(json.dumps(results, indent=1))
    print(f"\n{'method':<8} {'gpus':>4} {'mode':<6} {'tok/s':>9} {'x 1 GPU':>8} {'step s':>7}  peak reserved per rank (estimate)")
    single = {r["method"]: r.get("tokens_per_s") for r in results if r["gpus"] == 1}
    for r in results:
        if r["final"] != "done":
            print(f"{r['method']:<8} {r['gpus']:>4} {r.get('plan_mode', '-'):<6} {r['final']}: {r.get('reason')}")
            continue
        base = single.get(r["method"])
        speedup = f"{r['tokens_per_s'] / base:.2f}" if base and r.get("tokens_per_s") else "-"
        mode = r.get("plan_mode", "single")
        estimate = (r.get("estimates_gib") or {}).get(mode)
        peaks = ", ".join(f"{v:.1f}" for v in r["peak_reserved_gib_per_rank"].values()) or "-"
        print(f"{r['method']:<8} {r['gpus']:>4} {mode:<6} {r.get('tokens_per_s', 0):>9.0f} {speedup:>8} "
              f"{r.get('median_step_s', 0):>7.3f}  {peaks} GiB" + (f" ({estimate:.1f})" if estimate else ""))


if __name__ == "__main__":
    main()
