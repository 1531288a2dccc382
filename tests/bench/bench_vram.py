"""Estimator vs measured peak memory on a GPU, over the calibration matrix of issue 3.

    python tests/bench/bench_vram.py --out $OUT          # all shapes x methods x 2 batch shapes x checkpointing
    python tests/bench/bench_vram.py --shapes llama-3-8b --methods qlora

Each case runs the project's own trainer (tests/bench/bench_gpu.py --case) in a fresh process for a
few steps and compares `core.vram.estimate(...).peak_gib` (peak reserved + CUDA context) with the
measured torch.cuda.max_memory_reserved() + the context constant. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from shapes import SHAPES, build_shaped_model, synthetic_rows, write_rows  # noqa: E402

from core.vram import CUDA_CONTEXT_GIB, estimate, facts_from_fields  # noqa: E402

BATCH_SHAPES = [(4, 512), (8, 1024)]  # (packed rows per micro-batch, row length)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default="llama-3.2-1b,llama-3-8b,qwen2.5-7b")
    parser.add_argument("--methods", default="lora,lora-8bit,qlora")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    bench = Path(__file__).resolve().parent / "bench_gpu.py"
    results = []
    for shape in args.shapes.split(","):
        model_dir = build_shaped_model(shape, Path("/tmp/shapes") / shape)
        data = write_rows(synthetic_rows(3000, SHAPES[shape]["vocab_size"], cap=1024), f"/tmp/vram-data-{shape}.jsonl")
        facts = facts_from_fields(shape, SHAPES[shape])
        for method in args.methods.split(","):
            for batch, length in BATCH_SHAPES:
                for checkpointing in (False, True):
                    overrides = {"train": {"batch_size": batch, "gradient_checkpointing": checkpointing},
                                 "data": {"max_length": length}}
                    command = [sys.executable, str(bench), "--case", "--recipe", "ours", "--method", method,
                               "--model-dir", str(model_dir), "--data", str(data), "--steps", "2", "--warmup", "1",
                               "--ours", json.dumps(overrides)]
                    process = subprocess.run(command, capture_output=True, text=True)
                    line = next((l for l in process.stdout.splitlines() if l.startswith("RESULT ")), None)
                    predicted = estimate(facts, method, batch, length, 16, checkpointing).peak_gib
                    row = {"shape": shape, "method": method, "batch": batch, "length": length,
                           "checkpointing": checkpointing, "estimate_gib": predicted}
                    if line:
                        measured = json.loads(line[len("RESULT "):])
                        row.update(reserved_gib=measured["peak_reserved_gib"], allocated_gib=measured["peak_allocated_gib"])
                        row["error_pct"] = round(100 * (predicted / (row["reserved_gib"] + CUDA_CONTEXT_GIB) - 1), 1)
                    else:
                        row["failed"] = (process.stderr.strip().splitlines() or ["no output"])[-1][:200]
                    results.append(row)
                    print(json.dumps(row), flush=True)
                    Path(args.out, "bench-vram.json").write_text(json.dumps(results, indent=1))
    print(f"\n{'shape':<13} {'method':<10} {'micro-batch':>12} {'gc':>3} {'estimate':>9} {'measured':>9} {'error':>7}")
    for r in results:
        measured = f"{r['reserved_gib'] + CUDA_CONTEXT_GIB:.1f}G" if "reserved_gib" in r else "failed"
        error = f"{r['error_pct']:+.1f}%" if "error_pct" in r else "-"
        print(f"{r['shape']:<13} {r['method']:<10} {r['batch']:>4} x {r['length']:<6} {'on' if r['checkpointing'] else 'off':>3} "
              f"{r['estimate_gib']:>8.1f}G {measured:>9} {error:>7}")


if __name__ == "__main__":
    main()
