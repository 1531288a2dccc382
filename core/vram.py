"""GPU memory per method, and the fastest settings that fit.

The estimate adds up what the engine really holds: weights in the method's precision (bitsandbytes
leaves embeddings, head and norms in 16-bit), LoRA weights with their gradients and AdamW states,
activations per layer for the micro-batch's tokens (packed rows: tokens = micro-batch x max length)
with or without gradient checkpointing, logits, quantization buffers, allocator slack and the CUDA
context. `peak_gib` is peak reserved memory plus the CUDA context: what must be free on the card.

Per-token activation and logit terms were fitted to peak memory measured on an H200 with this
engine (Llama-3-8B shape, bf16, LoRA r=16 on all linear layers, packed rows of 512; see
tests/bench/RESULTS.md): 2 bytes x (12 h + 3.9 i + 1.5 (q + 2 kv widths)) per token and layer
without checkpointing, 2 h bytes per token and layer with it (plus one layer recomputed), and
1.33 bytes x vocabulary per token for the logits and loss. The 8-bit term (bitsandbytes' int8
backward holds ~1.54 bytes per linear weight in 16-bit copies) rests on one measured point.

`import core.vram` and estimates of catalog models import neither torch nor transformers.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from core.errors import HubError, ModelError

GIB = 1024**3
CUDA_CONTEXT_GIB = 0.55  # torch 2.x CUDA context + cuBLAS workspace on Hopper
METHODS = ("lora", "lora-8bit", "qlora")

# Fitted to H200 measurements (module docstring); element counts per token and layer, before the dtype.
ACTIVATION_HIDDEN = 12.0
ACTIVATION_INTERMEDIATE = 3.9
ACTIVATION_ATTENTION = 1.5
LOGIT_BYTES_PER_VOCAB = 1.33  # bf16 logits + loss workspace per token, per vocabulary entry
INT8_BACKWARD_BYTES = 1.54  # per linear weight, bitsandbytes int8 training (measured once)
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit weights + 8-bit absmax per 64 + fp32 per 256 blocks
ALLOCATOR_FRACTION = 0.03
ALLOCATOR_FIXED_GIB = 0.25
PEAK_BF16_FLOPS = 790e12
STEP_OVERHEAD_S = 0.2  # launch / Python cost of an optimizer step, measured ~0.2-0.3 s on an 8B model


@dataclass
class ModelFacts:
    name: str
    model_type: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    max_positions: int
    linear: list[tuple[int, int]] = field(default_factory=list)  # (in, out) of every adaptable linear layer
    other_params: int = 0  # norms, biases: kept in 16-bit by every method

    @property
    def linear_params(self) -> int:
        return sum(i * o for i, o in self.linear)

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def total_params(self) -> int:
        return self.linear_params + self.embedding_params + self.other_params

    def lora_params(self, rank: int) -> int:
        return sum(rank * (i + o) for i, o in self.linear)


def facts_from_fields(name: str, fields: dict[str, Any]) -> ModelFacts:
    """Facts of a decoder with Llama-style blocks (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3) from config fields."""
    hidden = fields["hidden_size"]
    heads = fields["num_attention_heads"]
    kv_heads = fields.get("num_key_value_heads") or heads
    head_dim = fields.get("head_dim") or hidden // heads
    intermediate = fields["intermediate_size"]
    layers = fields["num_hidden_layers"]
    q, kv = heads * head_dim, kv_heads * head_dim
    if fields.get("fused_qkv") or fields.get("model_type") == "phi3":
        block = [(hidden, q + 2 * kv), (q, hidden), (hidden, 2 * intermediate), (intermediate, hidden)]
    else:
        block = [(hidden, q), (hidden, kv), (hidden, kv), (q, hidden),
                 (hidden, intermediate), (hidden, intermediate), (intermediate, hidden)]
    norms_per_layer = 4 if str(fields.get("model_type", "")).startswith("gemma") else 2
    other = layers * norms_per_layer * hidden + hidden
    if fields.get("attention_bias", fields.get("model_type") == "qwen2"):  # Qwen2 always has q/k/v biases
        other += layers * (q + 2 * kv)
    return ModelFacts(name=name, model_type=fields.get("model_type", "llama"), hidden=hidden, intermediate=intermediate,
                      layers=layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim, vocab=fields["vocab_size"],
                      tied=bool(fields.get("tie_word_embeddings", False)),
                      max_positions=fields.get("max_position_embeddings") or 4096,
                      linear=block * layers, other_params=other)


def _facts_from_meta_model(name: str, config) -> ModelFacts:
    """Exact shapes for any architecture transformers knows: the model built on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linear, embedding, other = [], 0, 0
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "lm_head" not in module_name:
            linear.append((module.in_features, module.out_features))
    counted = {id(p) for m in model.modules() if isinstance(m, torch.nn.Linear) for p in [m.weight]}
    for parameter_name, parameter in model.named_parameters():
        if id(parameter) in counted and "lm_head" not in parameter_name:
            continue
        if "embed" in parameter_name or "lm_head" in parameter_name or "wte" in parameter_name:
            embedding += parameter.numel()
        else:
            other += parameter.numel()
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = getattr(text, "hidden_size", 0)
    vocab = getattr(text, "vocab_size", 0)
    tied = embedding <= vocab * hidden
    heads = getattr(text, "num_attention_heads", 1)
    return ModelFacts(name=name, model_type=getattr(config, "model_type", "?"), hidden=hidden,
                      intermediate=getattr(text, "intermediate_size", 4 * hidden),
                      layers=getattr(text, "num_hidden_layers", 1), heads=heads,
                      kv_heads=getattr(text, "num_key_value_heads", None) or heads,
                      head_dim=getattr(text, "head_dim", None) or hidden // max(heads, 1), vocab=vocab, tied=tied,
                      max_positions=getattr(text, "max_position_embeddings", 4096) or 4096, linear=linear,
                      other_params=other + max(0, embedding - vocab * hidden * (1 if tied else 2)))


LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "olmo2", "granite"}


def _config_fields(model: str, token: str | None) -> dict[str, Any]:
    path = Path(os.path.expanduser(model))
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.exists():
            raise ModelError(f"{model} has no config.json; point at the folder save_pretrained wrote.")
        return json.loads(config_path.read_text())
    if model.startswith((".", "/", "~")):
        raise ModelError(f"model folder {model} does not exist; check the path, or give a Hub id (org/name).")
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        raise
    try:
        return json.loads(Path(hf_hub_download(model, "config.json", token=token)).read_text())
    except GatedRepoError:
        raise HubError(f"'{model}' is gated: request access at https://huggingface.co/{model}, then log in.") from None
    except RepositoryNotFoundError:
        raise HubError(f"no model '{model}' on the Hub; check the spelling (org/name) or give a local folder.") from None
    except Exception as error:
        raise HubError(f"could not read {model}'s config from the Hub ({type(error).__name__}); "
                       "for offline use give a catalog model or a local folder.") from None


def model_facts(model: str, token: str | None = None) -> ModelFacts:
    """Facts from the catalog (offline, instant), a local folder's config.json, or the Hub's."""
    from core.catalog import lookup

    path = Path(os.path.expanduser(model))
    if not path.is_dir():
        found = lookup(model)
        if found:
            return facts_from_fields(found[0], found[1])
    fields = _config_fields(model, token)
    text_fields = fields.get("text_config") or fields
    if fields.get("model_type") in LLAMA_LIKE and not fields.get("text_config"):
        return facts_from_fields(model, fields)
    from transformers import AutoConfig

    config = AutoConfig.for_model(**fields) if "model_type" in fields else AutoConfig.from_pretrained(model)
    del text_fields
    return _facts_from_meta_model(model, config)


@dataclass
class Estimate:
    method: str
    batch_size: int
    seq_len: int
    gradient_checkpointing: bool
    weights_gib: float
    peak_gib: float
    breakdown: dict[str, float]
    fits: str = "unknown"  # fits | tight | no | unknown

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def weight_bytes(facts: ModelFacts, method: str, dtype_bytes: int = 2) -> float:
    """Bytes of the base model's weights in the method's precision."""
    unquantized = facts.embedding_params + facts.other_params
    if method == "lora":
        return facts.total_params * dtype_bytes
    if method == "lora-8bit":
        rows = sum(o for _, o in facts.linear)
        return facts.linear_params + 4 * rows + unquantized * dtype_bytes  # int8 + fp32 scale per output row
    return facts.linear_params * NF4_BYTES + unquantized * dtype_bytes


def estimate(facts: ModelFacts, method: str, batch_size: int = 4, seq_len: int = 1024, rank: int = 16,
             gradient_checkpointing: bool = True, device: str = "cuda", capacity_gib: float | None = None) -> Estimate:
    """Peak memory of a training step of the engine for `method` (peak reserved + CUDA context)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method}")
    cpu = device == "cpu"
    dtype_bytes = 4 if cpu else 2  # the CPU trains in fp32
    weights = weight_bytes(facts, method, dtype_bytes)
    lora = facts.lora_params(rank)
    # LoRA weights, gradients and AdamW's two moments: fp32 on a 16-bit base (peft's default), bf16 on a
    # quantized base (TRL casts them, per the QLoRA paper).
    lora_bytes = lora * (16 if method == "lora" or cpu else 8)
    tokens = batch_size * seq_len
    q_width, kv_width = facts.heads * facts.head_dim, facts.kv_heads * facts.head_dim
    per_layer = dtype_bytes * (ACTIVATION_HIDDEN * facts.hidden + ACTIVATION_INTERMEDIATE * facts.intermediate
                               + ACTIVATION_ATTENTION * (q_width + 2 * kv_width))
    if gradient_checkpointing:
        activations = tokens * (facts.layers * dtype_bytes * facts.hidden + per_layer)
    else:
        activations = tokens * facts.layers * per_layer
    logits = tokens * LOGIT_BYTES_PER_VOCAB * facts.vocab * (dtype_bytes / 2)
    largest = max((i * o for i, o in facts.linear), default=0)
    buffers = 0.0
    if method == "qlora":
        buffers = largest * dtype_bytes  # one weight dequantized at a time
    elif method == "lora-8bit":
        buffers = facts.linear_params * INT8_BACKWARD_BYTES
    allocated = weights + lora_bytes + activations + logits + buffers
    allocator = 0.0 if cpu else ALLOCATOR_FRACTION * allocated + ALLOCATOR_FIXED_GIB * GIB
    context = 0.0 if cpu else CUDA_CONTEXT_GIB * GIB
    breakdown = {
        "weights": weights, "lora_weights_grads_optimizer": lora_bytes, "activations": activations,
        "logits_and_loss": logits, "quantization_buffers": buffers, "allocator": allocator, "cuda_context": context,
    }
    breakdown = {key: round(value / GIB, 3) for key, value in breakdown.items()}
    peak = round(sum(breakdown.values()), 2)
    result = Estimate(method, batch_size, seq_len, gradient_checkpointing, breakdown["weights"], peak, breakdown)
    if capacity_gib:
        result.fits = verdict(peak, capacity_gib)
    return result


def verdict(peak_gib: float, capacity_gib: float) -> str:
    if peak_gib <= 0.9 * capacity_gib:
        return "fits"
    if peak_gib <= capacity_gib:
        return "tight"
    return "no"


def _relative_speed(facts: ModelFacts, tokens: int, gradient_checkpointing: bool) -> float:
    """Tokens per second up to a constant: a fixed per-step cost, then compute (4/3 more with recomputation)."""
    seconds_per_token = 6 * facts.total_params / (PEAK_BF16_FLOPS * 0.5)
    overhead_tokens = STEP_OVERHEAD_S / seconds_per_token
    return tokens / (overhead_tokens + tokens * (4 / 3 if gradient_checkpointing else 1.0))


def suggested_max_length(token_lengths: Sequence[int] | None, configured: int, max_positions: int) -> int:
    if not token_lengths:
        return min(configured, max_positions)
    ordered = sorted(token_lengths)
    p99 = ordered[min(len(ordered) - 1, int(math.ceil(0.99 * len(ordered))) - 1)]
    return max(64, min(configured, max_positions, int(math.ceil(p99 / 64) * 64)))


def fastest_settings(facts: ModelFacts, method: str, gpu_gib: float | None, token_lengths: Sequence[int] | None = None,
                     rank: int = 16, max_length: int = 1024, target_examples: int = 16, device: str | None = None,
                     packing: bool = True) -> dict[str, Any]:
    """Micro-batch, accumulation, checkpointing and max length that train fastest within `gpu_gib`.

    On the CPU (gpu_gib None) memory is rarely the limit and compute is: a small micro-batch, no
    checkpointing."""
    device = device or ("cuda" if gpu_gib else "cpu")
    length = suggested_max_length(token_lengths, max_length, facts.max_positions)
    mean_length = (sum(token_lengths) / len(token_lengths)) if token_lengths else length / 2
    examples_per_row = max(1.0, length / mean_length) if packing else 1.0
    if device == "cpu" or not gpu_gib:
        from core.hardware import system_memory_gib

        batch = 2
        chosen = estimate(facts, method, batch, length, rank, False, device="cpu")
        available = system_memory_gib()[1]
        return {"batch_size": batch, "grad_accum": max(1, round(target_examples / (batch * examples_per_row))),
                "gradient_checkpointing": bool(available and chosen.peak_gib > 0.8 * available),
                "max_length": length, "peak_gib": chosen.peak_gib, "fits": verdict(chosen.peak_gib, available) if available else "unknown"}
    best = None
    for checkpointing in (False, True):
        for batch in (1, 2, 4, 8, 16, 32, 64):
            result = estimate(facts, method, batch, length, rank, checkpointing, capacity_gib=gpu_gib)
            if result.fits != "fits":
                continue
            speed = _relative_speed(facts, batch * length, checkpointing)
            if best is None or speed > best[0] * 1.02:
                best = (speed, result)
    if best is None:  # nothing fits: the smallest footprint, and say so
        result = estimate(facts, method, 1, length, rank, True, capacity_gib=gpu_gib)
    else:
        result = best[1]
    return {"batch_size": result.batch_size,
            "grad_accum": max(1, round(target_examples / (result.batch_size * examples_per_row))),
            "gradient_checkpointing": result.gradient_checkpointing, "max_length": length,
            "peak_gib": result.peak_gib, "fits": result.fits}


def estimate_command(args) -> int:
    """`lora-wizard estimate MODEL [--method M] [--batch-size B --seq-len S --rank R] [--gpu-gib G] [--json]`."""
    from core.hardware import describe, detect_gpus

    facts = model_facts(args.model)
    gpus = [] if args.gpu_gib else detect_gpus()
    capacity = args.gpu_gib or (min(g.free_gib for g in gpus) if gpus else None)
    methods = [args.method] if args.method else list(METHODS)
    choice = {"on": [True], "off": [False], "auto": [False, True]}[args.gradient_checkpointing]
    rows = [estimate(facts, m, args.batch_size, args.seq_len, args.rank, gc, capacity_gib=capacity)
            for m in methods for gc in choice]
    fastest = {m: fastest_settings(facts, m, capacity, rank=args.rank, max_length=args.seq_len) for m in methods} \
        if capacity else {}
    if args.json:
        methods_out = {}
        for method in methods:
            candidates = [r for r in rows if r.method == method]
            primary = next((r for r in candidates if r.fits == "fits"), candidates[-1])
            methods_out[method] = {**primary.to_dict(), "estimates": [r.to_dict() for r in candidates],
                                   "fastest_settings": fastest.get(method)}
        print(json.dumps({"model": facts.name, "parameters": facts.total_params, "gpus": [asdict(g) for g in gpus],
                          "capacity_gib": capacity, "methods": methods_out}, indent=2))
        return 0
    where = f"a {args.gpu_gib:.0f} GiB GPU" if args.gpu_gib else describe(gpus)
    print(f"{facts.name}: {facts.total_params / 1e9:.2f}B parameters; micro-batch {args.batch_size} x {args.seq_len} "
          f"tokens, LoRA rank {args.rank}; against {where}")
    print(f"{'method':<10} {'checkpointing':<14} {'weights':>9} {'peak':>9}  fits")
    for row in rows:
        print(f"{row.method:<10} {'on' if row.gradient_checkpointing else 'off':<14} {row.weights_gib:>8.1f}G "
              f"{row.peak_gib:>8.1f}G  {row.fits if capacity else '-'}")
    for method, settings in fastest.items():
        print(f"fastest for {method}: micro-batch {settings['batch_size']} x {settings['max_length']}, accumulation "
              f"{settings['grad_accum']}, checkpointing {'on' if settings['gradient_checkpointing'] else 'off'} "
              f"({settings['peak_gib']:.1f} GiB, {settings['fits']})")
    return 0
