"""The estimator against measured peak memory on a GPU, over issue 3's matrix. One command:

    python3 tests/bench/bench_vram.py                        # 3 shapes x 3 methods x 2 batch shapes x gc on/off
    python3 tests/bench/bench_vram.py --shapes llama-3.2-1b --budget-minutes 9   # what fits one 10-minute call

Each case is the project's own trainer in a fresh process (`python -m core.train RUN_DIR` on a
config.yaml written here), a few steps on a real architecture with random bf16 weights
(tests/bench/shapes.py, saved once under /tmp/shapes) and token-exact synthetic data. Measured: the
largest `max_reserved_gib` / `max_allocated_gib` the trainer's step events report (torch's peaks,
fresh per process, loading included), and the CUDA context as `used - reserved` at the first step (on
an otherwise idle card; the first case runs alone for it). With --parallel-gib, cases run side by side
on the one card while their estimates (+15%) fit: torch's peaks are per process. Compared with `core.vram.estimate(...).peak_gib` for the same settings and
the Liger state the run really had. Prints a table last; writes bench-vram.json to --out ($OUT).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from shapes import SHAPES, build_shaped_model, synthetic_rows, write_rows  # noqa: E402

from core.vram import CUDA_CONTEXT_GIB, estimate, facts_from_fields  # noqa: E402

# (packed rows per micro-batch, row length): the same 4096 tokens in short and long rows, so the table
# also shows that attention memory does not grow with the square of the row length.
BATCH_SHAPES = [(8, 512), (2, 2048)]
RANK = 16


def run_case(model_dir: Path, data: Path, method: str, batch: int, length: int, checkpointing: bool, steps: int,
             liger: str, timeout_s: float, dropout: float = 0.05) -> dict:
    from core.config import config_from_dict

    run_dir = Path("/tmp/bench-vram") / f"{model_dir.name}-{method}-b{batch}-l{length}-gc{int(checkpointing)}-d{dropout}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    config = config_from_dict({
        "model": str(model_dir), "method": method,
        "lora": {"r": RANK, "alpha": 2 * RANK, "dropout": dropout, "target_modules": "all-linear"},
        "data": {"path": str(data), "max_length": length, "eval_fraction": 0.0},
        "train": {"max_steps": steps, "batch_size": batch, "grad_accum": 1, "gradient_checkpointing": checkpointing,
                  "logging_steps": 1, "save_steps": 100_000, "lr": 2e-4,
                  "liger_kernels": {"auto": "auto", "on": True, "off": False}[liger]},
        "output_dir": str(run_dir),
    })
    config.save(run_dir / "config.yaml")
    started = time.monotonic()
    try:
        process = subprocess.run([sys.executable, "-m", "core.train", str(run_dir)], capture_output=True, text=True,
                                 timeout=timeout_s, cwd=Path(__file__).resolve().parents[2])
        returncode = process.returncode
    except subprocess.TimeoutExpired:
        returncode = "timeout"
    events = []
    if (run_dir / "events.jsonl").exists():
        events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    steps_seen = [e for e in events if e["type"] == "step" and e.get("gpu_memory")]
    row: dict = {"seconds": round(time.monotonic() - started, 1)}
    if steps_seen:
        gpu = [e["gpu_memory"][0] for e in steps_seen]
        row["reserved_gib"] = max(g["max_reserved_gib"] for g in gpu)
        row["allocated_gib"] = max(g["max_allocated_gib"] for g in gpu)
        row["context_gib"] = round(gpu[0]["used_gib"] - gpu[0]["reserved_gib"], 2)
    final = next((e for e in reversed(events) if e["type"] in ("done", "failed", "cancelled")), None)
    if final and final["type"] == "done":
        row["liger"] = bool((final.get("kernels") or {}).get("liger"))
    else:
        reason = (final or {}).get("reason") or f"exit {returncode}; see {run_dir}/trainer.log"
        row["failed"] = reason[:200]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="llama-3.2-1b,llama-3-8b,qwen2.5-7b")
    parser.add_argument("--methods", default="lora,lora-8bit,qlora")
    parser.add_argument("--batch-shapes", default=",".join(f"{b}x{l}" for b, l in BATCH_SHAPES),
                        help="micro-batch x row length, comma-separated")
    parser.add_argument("--checkpointing", default="off,on")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--liger", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout (0 checks the estimator's dropout term)")
    parser.add_argument("--budget-minutes", type=float, default=float("inf"),
                        help="start no case after this much time (the device machine allows 10 minutes a call)")
    parser.add_argument("--parallel-gib", type=float, default=0.0,
                        help="run cases side by side while their estimates sum to at most this (torch's peaks are "
                             "per process, so each case's figures stay its own); 0: one at a time")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--keep", help="a bench-vram.json of an earlier call: its measured cases are kept, not rerun")
    args = parser.parse_args()
    deadline = time.monotonic() + 60 * args.budget_minutes
    batch_shapes = [tuple(int(x) for x in item.split("x")) for item in args.batch_shapes.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for shape in args.shapes.split(","):
        model_dir = build_shaped_model(shape, Path("/tmp/shapes") / shape)
        cap = max(length for _, length in batch_shapes)
        data = write_rows(synthetic_rows(4000, SHAPES[shape]["vocab_size"], cap=cap), f"/tmp/bench-vram-{shape}.jsonl")
        facts = facts_from_fields(shape, SHAPES[shape])
        for method in args.methods.split(","):
            for batch, length in batch_shapes:
                for checkpointing in (item == "on" for item in args.checkpointing.split(",")):
                    predicted = estimate(facts, method, batch, length, RANK, checkpointing, liger=args.liger != "off",
                                         lora_dropout=args.dropout)
                    cases.append(dict(shape=shape, method=method, batch=batch, length=length,
                                      checkpointing=checkpointing, model_dir=model_dir, data=data, facts=facts,
                                      planned_gib=predicted.peak_gib))
    order = {(c["shape"], c["method"], c["batch"], c["length"], c["checkpointing"]): i for i, c in enumerate(cases)}
    results: list[dict] = []
    if args.keep and Path(args.keep).exists():
        key = lambda r: (r["shape"], r["method"], r["batch"], r["length"], r["checkpointing"])  # noqa: E731
        results = [r for r in json.loads(Path(args.keep).read_text()) if "reserved_gib" in r]
        done = {key(r) for r in results}
        cases = [c for c in cases if key(c) not in done]
        print(f"kept {len(results)} measured cases from {args.keep}; {len(cases)} to run")
    lock = threading.Lock()
    in_flight: list[float] = []

    def measure(case: dict, alone: bool) -> None:
        row = {key: case[key] for key in ("shape", "method", "batch", "length", "checkpointing")}
        row["dropout"] = args.dropout
        row.update(run_case(case["model_dir"], case["data"], case["method"], case["batch"], case["length"],
                            case["checkpointing"], args.steps, args.liger,
                            timeout_s=min(max(deadline - time.monotonic(), 0) + 120, 540), dropout=args.dropout))
        if not alone:
            row.pop("context_gib", None)  # NVML's "used" counts the other cases' memory too
        liger = row.get("liger", args.liger == "on")
        predicted = estimate(case["facts"], case["method"], case["batch"], case["length"], RANK, case["checkpointing"],
                             liger=liger, lora_dropout=args.dropout)
        row["estimate_gib"] = predicted.peak_gib
        row["breakdown"] = predicted.breakdown
        row["side_by_side"] = not alone
        if "reserved_gib" in row:
            measured = row["reserved_gib"] + CUDA_CONTEXT_GIB
            row["error_pct"] = round(100 * (predicted.peak_gib / measured - 1), 1)
        with lock:
            results.append(row)
            print(json.dumps(row), flush=True)
            (out / "bench-vram.json").write_text(json.dumps(results, indent=1))

    if not cases:
        pass
    elif args.parallel_gib <= 0:
        for case in cases:
            if time.monotonic() > deadline:
                break
            measure(case, alone=True)
    else:
        # The first case alone (it measures the CUDA context), then the rest packed by their estimates,
        # largest first, with 15% headroom each so no case runs short because of another.
        first, rest = cases[0], sorted(cases[1:], key=lambda c: -c["planned_gib"])
        if results:
            rest.append(first)  # the context was measured by the earlier call
        else:
            measure(first, alone=True)
        threads = []
        while rest and time.monotonic() < deadline:
            with lock:
                used = sum(in_flight)
                pick = next((c for c in rest if used + 1.15 * c["planned_gib"] <= args.parallel_gib or not in_flight),
                            None)
                if pick is not None:
                    rest.remove(pick)
                    in_flight.append(1.15 * pick["planned_gib"])
            if pick is None:
                time.sleep(1)
                continue

            def worker(case=pick, share=1.15 * pick["planned_gib"]):
                try:
                    measure(case, alone=False)
                finally:
                    with lock:
                        in_flight.remove(share)

            thread = threading.Thread(target=worker)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
        if rest:
            print(f"{len(rest)} cases not started: --budget-minutes ran out")
    results.sort(key=lambda r: order.get((r["shape"], r["method"], r["batch"], r["length"], r["checkpointing"]), 0))
    (out / "bench-vram.json").write_text(json.dumps(results, indent=1))
    print_table(results)


def print_table(results: list[dict]) -> None:
    print(f"\nestimate = core.vram peak_gib; measured = peak reserved + {CUDA_CONTEXT_GIB} GiB context constant")
    print(f"{'shape':<13} {'method':<10} {'micro-batch':>12} {'gc':>3} {'liger':>5} {'estimate':>9} {'measured':>9} "
          f"{'allocated':>9} {'error':>7} {'context':>8}")
    for r in results:
        measured = f"{r['reserved_gib'] + CUDA_CONTEXT_GIB:.1f}G" if "reserved_gib" in r else "-"
        allocated = f"{r['allocated_gib']:.1f}G" if "allocated_gib" in r else "-"
        error = f"{r['error_pct']:+.1f}%" if "error_pct" in r else "-"
        context = f"{r['context_gib']:.2f}G" if "context_gib" in r else "-"
        line = (f"{r['shape']:<13} {r['method']:<10} {r['batch']:>4} x {r['length']:<5} "
                f"{'on' if r['checkpointing'] else 'off':>3} {'on' if r.get('liger') else 'off':>5} "
                f"{r['estimate_gib']:>8.1f}G {measured:>9} {allocated:>9} {error:>7} {context:>8}")
        print(line + (f"  FAILED: {r['failed']}" if "failed" in r else ""))
    errors = [abs(r["error_pct"]) for r in results if "error_pct" in r]
    if errors:
        print(f"{len(errors)} cases measured; mean |error| {sum(errors) / len(errors):.1f}%, worst {max(errors):.1f}%")


if __name__ == "__main__":
    main()
