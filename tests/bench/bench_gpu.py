"""Side by side on one GPU: lora-wizard's trainer vs the usual HF Trainer + PEFT recipe.

    python tests/bench/bench_gpu.py --shape llama-3-8b --methods lora,qlora,lora-8bit --out $OUT

The usual recipe: transformers' Trainer on a PEFT model, every example padded to max_length 512,
LoRA r=16, alpha 32, dropout 0.05 on all linear layers, gradient checkpointing on, paged 8-bit
AdamW for the quantized methods (peft's prepare_model_for_kbit_training first), bf16, micro-batch 8.
Ours: `core.train.run_training` with the engine's defaults (padding-free packing, Liger kernels,
fused AdamW, checkpointing as configured). Same data: instruction-like rows whose lengths follow a
log-normal with median ~180 tokens capped at 512. Each case runs in a fresh process; after warm-up
steps, steps are timed with torch.cuda.synchronize(); tokens are real (non-pad) tokens; peaks are
torch's max_memory_reserved / max_memory_allocated over the whole case (weights included).
MFU = tokens/s x FLOPs/token / 790e12, FLOPs/token = 4N (6N with gradient checkpointing),
N = parameters outside the embedding and the output head.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from shapes import SHAPES, build_shaped_model, synthetic_rows, write_rows  # noqa: E402

PEAK_FLOPS = 790e12
GIB = 1024**3


def step_timer():
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.tokens = [], []
            self._start = None
            self._seen = 0

        def on_step_begin(self, args, state, control, **kwargs):
            torch.cuda.synchronize()
            self._start = time.perf_counter()
            self._seen = state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kwargs):
            torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self._start)
            self.tokens.append(state.num_input_tokens_seen - self._seen)

    return StepTimer()


def non_embedding_parameters(model) -> int:
    total = 0
    for name, parameter in model.named_parameters():
        if "embed_tokens" in name or "lm_head" in name or "lora_" in name:
            continue
        count = parameter.numel()
        if parameter.__class__.__name__ == "Params4bit":
            count = count * 2  # two 4-bit weights per stored byte
        total += count
    return total


def run_baseline(args) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, Trainer, TrainingArguments,
                              default_data_collator)

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    quantization = None
    if args.method == "lora-8bit":
        quantization = BitsAndBytesConfig(load_in_8bit=True)
    elif args.method == "qlora":
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.bfloat16, quantization_config=quantization,
                                                 device_map={"": 0})
    n = non_embedding_parameters(model)
    if quantization is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()]

    def encode(row):
        text = tokenizer.apply_chat_template([{"role": "user", "content": row["instruction"]},
                                              {"role": "assistant", "content": row["output"]}], tokenize=False)
        encoded = tokenizer(text, padding="max_length", max_length=512, truncation=True)
        encoded["labels"] = [t if m else -100 for t, m in zip(encoded["input_ids"], encoded["attention_mask"])]
        return encoded

    dataset = Dataset.from_list(rows).map(encode, remove_columns=["instruction", "input", "output"])
    timer = step_timer()
    training_args = TrainingArguments(
        output_dir="/tmp/bench-baseline", per_device_train_batch_size=8, gradient_accumulation_steps=1,
        gradient_checkpointing=True, bf16=True, learning_rate=2e-4, max_steps=args.warmup + args.steps,
        optim="paged_adamw_8bit" if quantization is not None else "adamw_torch", logging_steps=1, save_strategy="no",
        report_to="none", include_num_input_tokens_seen="non_padding", disable_tqdm=True, dataloader_num_workers=2,
    )
    Trainer(model=model, args=training_args, train_dataset=dataset, data_collator=default_data_collator,
            callbacks=[timer]).train()
    return summarize(args, timer, n, gradient_checkpointing=True)


def run_ours(args) -> dict:
    import torch

    from core.config import config_from_dict
    from core.train import run_training

    overrides = json.loads(args.ours) if args.ours else {}
    train = {"max_steps": args.warmup + args.steps, "batch_size": 8, "grad_accum": 1, "save_steps": 10_000,
             "logging_steps": 1, "lr": 2e-4}
    train.update(overrides.get("train", {}))
    config = config_from_dict({
        "model": args.model_dir, "method": args.method,
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
        "data": {"path": args.data, "max_length": 512, "eval_fraction": 0.0, **overrides.get("data", {})},
        "train": train, "output_dir": f"/tmp/bench-ours-{os.getpid()}",
    })
    timer = step_timer()
    holder = {}

    from transformers import TrainerCallback

    class GrabModel(TrainerCallback):
        def on_train_begin(self, args_, state, control, model=None, **kwargs):
            holder["n"] = non_embedding_parameters(model)

    final = run_training(config, config.output_dir, extra_callbacks=[timer, GrabModel()])
    if final["type"] != "done":
        raise SystemExit(f"our trainer failed: {final}")
    events = [json.loads(line) for line in Path(config.output_dir, "events.jsonl").read_text().splitlines()]
    started = next(e for e in events if e["type"] == "started")
    result = summarize(args, timer, holder["n"], gradient_checkpointing=started["gradient_checkpointing"])
    result.update(kernels=final.get("kernels"), batch_size=started["batch_size"], max_length=config.data.max_length)
    return result


def summarize(args, timer, n: int, gradient_checkpointing: bool) -> dict:
    import torch

    times = timer.times[args.warmup:]
    tokens = timer.tokens[args.warmup:]
    tokens_per_second = sum(tokens) / sum(times)
    flops_per_token = (6 if gradient_checkpointing else 4) * n
    return {
        "median_step_s": round(statistics.median(times), 4),
        "real_tokens_per_step": round(statistics.mean(tokens), 1),
        "tokens_per_s": round(tokens_per_second, 1),
        "mfu": round(tokens_per_second * flops_per_token / PEAK_FLOPS, 4),
        "mfu_4n": round(tokens_per_second * 4 * n / PEAK_FLOPS, 4),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 2),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 2),
        "gradient_checkpointing": gradient_checkpointing,
        "non_embedding_params": n,
        "steps_timed": len(times),
    }


def run_case(args) -> None:
    result = run_baseline(args) if args.recipe == "baseline" else run_ours(args)
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="llama-3-8b", choices=sorted(SHAPES))
    parser.add_argument("--methods", default="lora,qlora,lora-8bit")
    parser.add_argument("--variants", default='{"ours": {}}',
                        help='JSON: name -> overrides of our config, e.g. {"ours": {}, "ours-gc": {"train": {...}}}; '
                             'an "env" key sets environment variables of that case')
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--models", default="/tmp/shapes")
    # one case (internal)
    parser.add_argument("--case", action="store_true")
    parser.add_argument("--recipe")
    parser.add_argument("--method")
    parser.add_argument("--model-dir")
    parser.add_argument("--data")
    parser.add_argument("--ours")
    args = parser.parse_args()
    if args.case:
        run_case(args)
        return

    model_dir = build_shaped_model(args.shape, Path(args.models) / args.shape)
    data = write_rows(synthetic_rows(args.rows, SHAPES[args.shape]["vocab_size"]), f"/tmp/bench-data-{args.shape}.jsonl")
    variants = json.loads(args.variants)
    results = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for method in args.methods.split(","):
        cases = ([] if args.no_baseline else [("baseline", None)]) + list(variants.items())
        for recipe, overrides in cases:
            command = [sys.executable, __file__, "--case", "--recipe", "baseline" if recipe == "baseline" else "ours",
                       "--method", method, "--model-dir", str(model_dir), "--data", str(data),
                       "--steps", str(args.steps), "--warmup", str(args.warmup)]
            if overrides is not None:
                command += ["--ours", json.dumps(overrides)]
            started = time.time()
            env = {**os.environ, **(overrides or {}).get("env", {})}
            process = subprocess.run(command, capture_output=True, text=True, env=env)
            line = next((l for l in process.stdout.splitlines() if l.startswith("RESULT ")), None)
            row = {"shape": args.shape, "method": method, "recipe": recipe, "wall_s": round(time.time() - started, 1)}
            if line:
                row.update(json.loads(line[len("RESULT "):]))
            else:
                row["error"] = (process.stderr.strip().splitlines() or ["no output"])[-1][:300]
                (out / f"error-{method}-{recipe}.log").write_text(process.stdout + process.stderr)
            results.append(row)
            print(json.dumps(row), flush=True)
            (out / f"bench-gpu-{args.shape}.json").write_text(json.dumps(results, indent=1))
    print_table(results)


def print_table(results: list[dict]) -> None:
    print(f"\n{'method':<10} {'recipe':<14} {'tok/s':>9} {'x base':>7} {'MFU':>6} {'step s':>7} {'reserved':>9} "
          f"{'allocated':>9} {'gc':>3}")
    baselines = {r["method"]: r.get("tokens_per_s") for r in results if r["recipe"] == "baseline"}
    for r in results:
        if "error" in r:
            print(f"{r['method']:<10} {r['recipe']:<14} ERROR {r['error']}")
            continue
        base = baselines.get(r["method"])
        speedup = f"{r['tokens_per_s'] / base:.2f}" if base else "-"
        print(f"{r['method']:<10} {r['recipe']:<14} {r['tokens_per_s']:>9.0f} {speedup:>7} {r['mfu']:>6.1%} "
              f"{r['median_step_s']:>7.3f} {r['peak_reserved_gib']:>8.1f}G {r['peak_allocated_gib']:>8.1f}G "
              f"{'on' if r['gradient_checkpointing'] else 'off':>3}")


if __name__ == "__main__":
    main()
