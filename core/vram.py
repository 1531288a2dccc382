"""GPU memory per method, and the fastest settings that fit.

The estimate adds up what the engine really holds during a training step:

- weights in the method's precision: bf16 for `lora`; for `lora-8bit` LLM.int8 (1 byte a weight + an
  fp32 scale per output row); for `qlora` NF4 with double quantization (half a byte a weight + an
  8-bit absmax per 64-weight block + an fp32 scale per 256 blocks). bitsandbytes leaves embeddings,
  the head and norms unquantized, in the dtype the model is loaded in (bf16).
- LoRA weights, their gradients and AdamW's two moments. peft creates adapters in fp32 (its
  `autocast_adapter_dtype=True` upcasts them); TRL's SFTTrainer then casts them to bf16 when the
  base is quantized (QLoRA paper recipe), so a LoRA weight costs 4+4+8 bytes on a 16-bit base and
  2+2+4 bytes on a quantized one. (On CUDA the engine stops peft casting each adapted layer's input
  to fp32, core.model.adapters_compute_in_input_dtype; the fit below predates that: the 8B bf16
  16-row peak fell 1.5 GiB with it, so 16-bit LoRA estimates now err ~8% on the safe side.)
- activations for the micro-batch's tokens. The engine packs examples padding-free into rows
  (TRL `packing_strategy="bfd"`), so tokens = micro-batch x max length. Without gradient
  checkpointing every layer keeps its full set (hidden-state copies, norms, attention inputs and
  output with a memory-efficient kernel: no seq^2 term, SwiGLU intermediates, LoRA inputs and
  dropout copies and masks); with checkpointing one hidden state per layer boundary plus one
  layer's full set while it is recomputed.
- logits and loss: the engine's trainer (TRL's SFTTrainer) scores tokens through its fused LM head,
  in tiles, so the logits are never materialised, with or without Liger (TRL turns Liger's own fused
  cross-entropy off). A trainer that materialises them (the usual recipe, `fused_loss=False`) holds
  bf16 logits, their fp32 upcast and fp32 log-softmax / gradient (2 + 4 + 4 bytes per vocabulary
  entry and token).
- quantization buffers (NF4: one layer's largest weight dequantized to bf16 at a time; LLM.int8:
  bitsandbytes' backward buffers), allocator slack, and the CUDA context.

`peak_gib` is peak reserved memory plus the CUDA context: what must be free on the card.

Per-token activation and logit terms with Liger on were fitted to peak memory measured on an H200
with this engine (Llama-3-8B shape, bf16, LoRA r=16 on all linear layers, packed rows of 512; see
tests/bench/RESULTS.md): 2 bytes x (12 h + 3.9 i + 1.5 (q + 2 kv widths)) per token and layer
without checkpointing, which is within ~6% of the analytic count of the tensors autograd saves,
and 1.33 bytes x vocabulary per token for the fused loss and everything else that grows with tokens.
Without Liger the analytic differences are added: HF's RMSNorm saves an fp32 copy of its input
(+2 h bytes per norm) and SwiGLU saves the SiLU output (+2 i bytes). With LoRA dropout 0 the
dropout masks and per-adapter input copies are taken off (analytic, not yet measured:
tests/bench/bench_vram.py --dropout 0 measures it). The 8-bit backward term (~1.54 bytes per linear
weight) rests on one measured point.

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
CUDA_CONTEXT_GIB = 0.55  # torch 2.x CUDA context + cuBLAS workspace on an H200: outside torch's reserved memory
METHODS = ("lora", "lora-8bit", "qlora")

# Fitted to H200 measurements (module docstring): elements per token and layer, before the dtype.
ACTIVATION_HIDDEN = 12.0
ACTIVATION_INTERMEDIATE = 3.9
ACTIVATION_ATTENTION = 1.5
# Without Liger: HF RMSNorm keeps an fp32 copy of its input (two norms a layer), SiLU keeps its output.
NO_LIGER_HIDDEN = 2.0
NO_LIGER_INTERMEDIATE = 1.0
# TRL's SFTTrainer (>= 1.16) always scores tokens through its fused LM head (log-probabilities in tiles, no
# logits); it turns Liger's fused cross-entropy off. Per token and vocabulary entry, in bf16 (fitted):
FUSED_LOSS_BYTES_PER_VOCAB = 1.33
LOGIT_FP32_BYTES = 8  # materialised logits: fp32 upcast (or log-softmax output) + fp32 gradient (the usual recipe)
INT8_BACKWARD_BYTES = 1.54  # per linear weight, bitsandbytes LLM.int8 training on CUDA (measured once)
INT8_ROW_SCALE_BYTES = 4  # fp32 SCB per output row
NF4_BLOCK = 64  # weights per absmax; double quantization: 256 absmax values per fp32 scale
NF4_NESTED_BLOCK = 256
NF4_TABLES_BYTES = 4 * (16 + 256) + 4  # per quantized layer: the NF4 and 8-bit code tables (fp32) + the absmax offset
# Adapter bytes per LoRA weight: weight + gradient + AdamW's two moments, in the adapter's dtype.
LORA_FP32_BYTES = (4, 4, 8)
LORA_BF16_BYTES = (2, 2, 4)  # TRL casts adapters on a quantized base to bf16
ALLOCATOR_FRACTION = 0.03  # reserved above allocated (the trainer uses expandable segments: core.train)
ALLOCATOR_FIXED_GIB = 0.25
HUB_TIMEOUT_S = 15.0
TIGHT_SHARE = 0.10  # within 10% of the free memory: "tight"
PEAK_BF16_FLOPS = 790e12
STEP_OVERHEAD_S = 0.2  # launch / Python cost of a micro-batch, measured ~0.2-0.3 s on an 8B model
DEFAULT_LORA_DROPOUT = 0.05  # the engine's default (core.config), also what the H200 fit was measured with
GRADIENT_CHECKPOINTING_COST = 4 / 3  # recomputing the forward: ~30% slower steps


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
    other_params: int = 0  # norms, biases, vision embeddings: kept in 16-bit by every method

    @property
    def linear_params(self) -> int:
        return sum(i * o for i, o in self.linear)

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def total_params(self) -> int:
        return self.linear_params + self.embedding_params + self.other_params

    @property
    def largest_linear(self) -> int:
        return max((i * o for i, o in self.linear), default=0)

    def lora_params(self, rank: int) -> int:
        return sum(rank * (i + o) for i, o in self.linear)


# --- model facts ---------------------------------------------------------------------------------

# Decoders whose parameter layout facts_from_fields knows exactly (tests compare each with the real
# architecture built on the meta device). Anything else goes through the meta device.
ANALYTIC_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "granite", "olmo2"}
TIED_BY_DEFAULT = {"gemma", "gemma2", "gemma3_text"}


def facts_from_fields(name: str, fields: dict[str, Any]) -> ModelFacts:
    """Facts of a decoder with Llama-style blocks (ANALYTIC_TYPES) from its config.json fields."""
    model_type = fields.get("model_type", "llama")
    hidden = fields["hidden_size"]
    heads = fields["num_attention_heads"]
    kv_heads = fields.get("num_key_value_heads") or heads
    head_dim = fields.get("head_dim") or hidden // heads
    intermediate = fields["intermediate_size"]
    layers = fields["num_hidden_layers"]
    q, kv = heads * head_dim, kv_heads * head_dim
    if model_type == "phi3" or fields.get("fused_qkv"):
        block = [(hidden, q + 2 * kv), (q, hidden), (hidden, 2 * intermediate), (intermediate, hidden)]
    else:
        block = [(hidden, q), (hidden, kv), (hidden, kv), (q, hidden),
                 (hidden, intermediate), (hidden, intermediate), (intermediate, hidden)]
    # Norms: Gemma 2/3 add post-attention and post-feedforward norms; OLMo-2 has only those two.
    per_layer = (4 if model_type in ("gemma2", "gemma3_text") else 2) * hidden
    if model_type in ("qwen3", "gemma3_text"):
        per_layer += 2 * head_dim  # q_norm, k_norm per head
    elif model_type == "olmo2":
        per_layer += q + kv  # q_norm, k_norm over all heads
    if model_type == "qwen2":
        per_layer += q + 2 * kv  # Qwen2 always has q/k/v biases, no o_proj bias
    elif fields.get("attention_bias") and model_type != "phi3":
        per_layer += q + 2 * kv + hidden
    if fields.get("mlp_bias") and model_type in ("llama", "granite"):
        per_layer += 2 * intermediate + hidden
    linear = block * layers
    other = layers * per_layer + hidden  # + the final norm
    vision = fields.get("vision_config")
    if vision:  # a multimodal catalog entry (Gemma 3 4B+): its SigLIP tower is adapted and quantized too
        vision_linear, vision_other = _siglip_layout(vision, hidden)
        linear, other = linear + vision_linear, other + vision_other
    return ModelFacts(name=name, model_type=model_type, hidden=hidden, intermediate=intermediate,
                      layers=layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim, vocab=fields["vocab_size"],
                      tied=bool(fields.get("tie_word_embeddings", model_type in TIED_BY_DEFAULT)),
                      max_positions=fields.get("max_position_embeddings") or 4096,
                      linear=linear, other_params=other)


def _siglip_layout(vision: dict[str, Any], text_hidden: int) -> tuple[list[tuple[int, int]], int]:
    """(linear shapes, other parameters) of a SigLIP vision tower and Gemma 3's projector into the text model."""
    width, mlp, layers = vision["hidden_size"], vision["intermediate_size"], vision["num_hidden_layers"]
    patches = (vision["image_size"] // vision["patch_size"]) ** 2
    block = [(width, width)] * 4 + [(width, mlp), (mlp, width)]
    per_layer = 4 * width + 4 * width + mlp + width  # two layer norms (weight + bias), q/k/v/o and fc biases
    patch_embedding = vision.get("num_channels", 3) * vision["patch_size"] ** 2 * width + width
    other = layers * per_layer + patch_embedding + patches * width + 2 * width  # + position embedding, post norm
    other += width * text_hidden + width  # projector weight (a parameter, not a Linear) and its norm
    return block * layers, other


def _facts_from_meta_model(name: str, config) -> ModelFacts:
    """Exact shapes for any architecture transformers knows: the model built on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    output = model.get_output_embeddings()
    try:
        embedding_weights = {id(model.get_input_embeddings().weight)}
    except (AttributeError, NotImplementedError):
        embedding_weights = set()
    if output is not None:
        embedding_weights.add(id(output.weight))
    linear_weights = set()
    linear = []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not output:
            linear.append((module.in_features, module.out_features))
            linear_weights.add(id(module.weight))
    embedding, other = 0, 0
    for parameter in model.parameters():  # tied parameters are listed once
        if id(parameter) in linear_weights:
            continue
        if id(parameter) in embedding_weights:
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
                      # keeps total_params exact where embeddings are not vocab x hidden (padded, factorised)
                      other_params=other + embedding - vocab * hidden * (1 if tied else 2))


def _config_fields(model: str, token: str | None, revision: str | None = None) -> dict[str, Any]:
    path = Path(os.path.expanduser(model))
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.exists():
            raise ModelError(f"{model} has no config.json; point at the folder save_pretrained wrote.")
        return json.loads(config_path.read_text())
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelError(f"model folder {model} does not exist; check the path, or give a Hub id (org/name).")
    from huggingface_hub import constants, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)

    try:  # a config downloaded before (training downloads it) answers offline and at once
        return json.loads(Path(hf_hub_download(model, "config.json", revision=revision, token=token,
                                                local_files_only=True)).read_text())
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    if constants.HF_HUB_OFFLINE:
        raise HubError(f"HF_HUB_OFFLINE is set and {model}'s config is not in the cache; unset it, or give a "
                       "catalog model or a local folder.")
    # One GET, no retries: hf_hub_download backs off for ~20 s on a machine without network.
    from huggingface_hub import get_session
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

    try:
        response = get_session().get(hf_hub_url(model, "config.json", revision=revision),
                                     headers=build_hf_headers(token=token), follow_redirects=True, timeout=HUB_TIMEOUT_S)
        hf_raise_for_status(response)
        return json.loads(response.content)
    except GatedRepoError:
        raise HubError(f"{model} is gated and this account has no access yet: request it at "
                       f"{constants.ENDPOINT}/{model}, then try again.") from None
    except RepositoryNotFoundError:
        hint = "" if token else " (if it is private, log in first with `lora-wizard login`)"
        raise HubError(f"No model '{model}' on the Hub; check the spelling (org/name) or give a local folder{hint}.") from None
    except EntryNotFoundError:
        raise ModelError(f"{model} has no config.json on the Hub; is it a transformers model?") from None
    except json.JSONDecodeError:
        raise ModelError(f"{model}'s config.json on the Hub is not valid JSON.") from None
    except Exception as error:  # unreachable, refused token: the Hub module's one-line wording
        from core.hub import _hub_error

        raise _hub_error(error, token, model) from None


def model_facts(model: str, token: str | None = None, revision: str | None = None) -> ModelFacts:
    """Facts from the catalog (offline, instant), a local folder's config.json, or the Hub's."""
    from core.catalog import lookup

    path = Path(os.path.expanduser(model))
    if not path.is_dir():
        found = lookup(model)
        if found:
            return facts_from_fields(found[0], found[1])
    fields = _config_fields(model, token, revision)
    if fields.get("model_type") in ANALYTIC_TYPES and "text_config" not in fields:
        return facts_from_fields(model, fields)
    if "model_type" not in fields:
        raise ModelError(f"{model}'s config.json has no model_type; it is not a transformers model config.")
    from transformers import AutoConfig

    config_fields = dict(fields)
    try:
        config = AutoConfig.for_model(config_fields.pop("model_type"), **config_fields)
        return _facts_from_meta_model(model, config)
    except (ValueError, KeyError) as error:
        raise ModelError(f"transformers does not know {model}'s architecture ({fields.get('model_type')}): "
                         f"{str(error).splitlines()[0]}") from None


# --- the estimate --------------------------------------------------------------------------------

@dataclass
class Estimate:
    method: str
    batch_size: int
    seq_len: int
    gradient_checkpointing: bool
    weights_gib: float
    peak_gib: float
    breakdown: dict[str, float]
    fits: str = "unknown"  # fits | tight | no | unknown (no capacity given)
    liger: bool = False
    device: str = "cuda"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Architectures Liger patches (its fused linear cross-entropy included); for others the engine's
# `use_liger_kernel` changes nothing and the logits are materialised.
LIGER_TYPES = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3", "gemma3_text",
               "phi3", "granite", "olmo2", "glm4", "mllama", "qwen2_vl", "qwen2_5_vl", "llava", "paligemma"}


def liger_available() -> bool:
    """Whether the engine's `train.liger_kernels: auto` would turn Liger on (installed; checked without importing)."""
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


def weight_bytes(facts: ModelFacts, method: str, dtype_bytes: int = 2) -> float:
    """Bytes of the base model's weights in the method's precision (unquantized parts in `dtype_bytes`)."""
    unquantized = facts.embedding_params + facts.other_params
    if method == "lora":
        return facts.total_params * dtype_bytes
    if method == "lora-8bit":
        rows = sum(o for _, o in facts.linear)
        return facts.linear_params + INT8_ROW_SCALE_BYTES * rows + unquantized * dtype_bytes
    if method == "qlora":
        return sum(nf4_bytes(i * o) for i, o in facts.linear) + unquantized * dtype_bytes
    raise ValueError(f"unknown method {method}")


def adapter_bytes(facts: ModelFacts, method: str, rank: int) -> dict[str, float]:
    """LoRA weights, their gradients and AdamW's two moments: fp32 on a 16-bit base (peft upcasts adapters),
    bf16 on a quantized base (TRL's SFTTrainer casts them, as the QLoRA paper does)."""
    count = facts.lora_params(rank)
    weight, gradient, optimizer = LORA_FP32_BYTES if method == "lora" else LORA_BF16_BYTES
    return {"lora_weights": count * weight, "lora_gradients": count * gradient, "optimizer_states": count * optimizer}


def nf4_bytes(weights: int) -> int:
    """Bytes of one weight matrix in NF4 with double quantization, as bitsandbytes stores it."""
    blocks = math.ceil(weights / NF4_BLOCK)
    return weights // 2 + blocks + 4 * math.ceil(blocks / NF4_NESTED_BLOCK) + NF4_TABLES_BYTES


def activation_bytes_per_token_and_layer(facts: ModelFacts, dtype_bytes: int, liger: bool, method: str = "lora",
                                         lora_dropout: float = DEFAULT_LORA_DROPOUT) -> float:
    """Everything one decoder layer keeps for backward, per token, without checkpointing."""
    q_width, kv_width = facts.heads * facts.head_dim, facts.kv_heads * facts.head_dim
    elements = (ACTIVATION_HIDDEN * facts.hidden + ACTIVATION_INTERMEDIATE * facts.intermediate
                + ACTIVATION_ATTENTION * (q_width + 2 * kv_width))
    if not liger:
        # In fp32 (the CPU) the norm's upcast is no copy; the SiLU output is kept either way.
        elements += (NO_LIGER_HIDDEN * facts.hidden if dtype_bytes == 2 else 0) + NO_LIGER_INTERMEDIATE * facts.intermediate
    dropout_saving = 0.0 if lora_dropout else _dropout_bytes(facts, method, dtype_bytes)
    return dtype_bytes * elements - dropout_saving


def _dropout_bytes(facts: ModelFacts, method: str, dtype_bytes: int) -> float:
    """Bytes per token and layer that LoRA dropout adds (the fit was measured with dropout 0.05).

    Each adapted layer's dropout keeps a mask (1 byte an element) and its own dropped-out copy of the
    input. Without dropout, adapters in the input's dtype share the input the layers next to them read
    (q/k/v, gate/up); fp32 adapters on a bf16 base still get a copy each (peft casts the input to fp32,
    autocast casts it back to bf16 for the matmul), so there only the masks go."""
    inputs = sum(i for i, _ in facts.linear) / max(facts.layers, 1)
    saved = inputs  # the masks
    if method != "lora" or dtype_bytes == 4:
        distinct = 2 * facts.hidden + facts.heads * facts.head_dim + facts.intermediate  # attention, o, MLP, down inputs
        saved += dtype_bytes * max(0.0, inputs - distinct)
    return saved


def estimate(facts: ModelFacts, method: str, batch_size: int = 4, seq_len: int = 1024, rank: int = 16,
             gradient_checkpointing: bool = True, device: str = "cuda", capacity_gib: float | None = None,
             liger: bool | None = None, lora_dropout: float = DEFAULT_LORA_DROPOUT,
             fused_loss: bool = True) -> Estimate:
    """Peak memory of one training step of the engine for `method`: peak reserved + CUDA context.

    `device="cpu"` gives the CPU-memory estimate of a CPU run (the engine trains in fp32 there, without
    Liger, and there is no CUDA context). `liger=None` means what the engine's `auto` does: on with CUDA
    when liger-kernel is installed. `fused_loss=False` estimates a trainer that materialises the logits
    (the usual Trainer recipe); the engine never does (TRL's fused LM head)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method}; choose one of {', '.join(METHODS)}")
    cpu = device == "cpu"
    liger = False if cpu else (liger_available() if liger is None else liger)
    liger = liger and facts.model_type in LIGER_TYPES
    dtype_bytes = 4 if cpu else 2
    tokens = batch_size * seq_len

    weights = weight_bytes(facts, method, dtype_bytes)
    adapter = adapter_bytes(facts, method, rank)

    per_layer = activation_bytes_per_token_and_layer(facts, dtype_bytes, liger, method, lora_dropout)
    if gradient_checkpointing:
        activations = tokens * (facts.layers * dtype_bytes * facts.hidden + per_layer)
    else:
        activations = tokens * facts.layers * per_layer
    if fused_loss:
        logits = tokens * FUSED_LOSS_BYTES_PER_VOCAB * (dtype_bytes / 2) * facts.vocab
    else:
        logits = tokens * (dtype_bytes + LOGIT_FP32_BYTES) * facts.vocab

    dequantization = facts.largest_linear * dtype_bytes if method == "qlora" else 0.0
    int8_backward = facts.linear_params * INT8_BACKWARD_BYTES if method == "lora-8bit" and not cpu else 0.0
    allocated = weights + sum(adapter.values()) + activations + logits + dequantization + int8_backward
    breakdown_bytes = {
        "weights": weights,
        **adapter,
        "activations": activations,
        "logits_and_loss": logits,
        "dequantization_buffers": dequantization,
        "int8_backward_buffers": int8_backward,
        "allocator": 0.0 if cpu else ALLOCATOR_FRACTION * allocated + ALLOCATOR_FIXED_GIB * GIB,
        "cuda_context": 0.0 if cpu else CUDA_CONTEXT_GIB * GIB,
    }
    breakdown = {key: round(value / GIB, 4) for key, value in breakdown_bytes.items()}
    peak = round(sum(breakdown_bytes.values()) / GIB, 2)
    result = Estimate(method, batch_size, seq_len, gradient_checkpointing, breakdown["weights"], peak, breakdown,
                      liger=liger, device=device)
    if capacity_gib:
        result.fits = verdict(peak, capacity_gib)
    return result


def parallel_estimate(single: Estimate, facts: ModelFacts, processes: int, mode: str) -> Estimate:
    """Peak per GPU when `processes` GPUs train together, from the one-GPU estimate of the same micro-batch.

    DDP: every GPU holds the whole model; DDP adds its gradient buckets (a flat copy of the trainable
    gradients). FSDP (FULL_SHARD): the base weights, adapters, their gradients and AdamW state are
    split across the GPUs; each GPU gathers one decoder layer at a time, two with backward prefetch.
    Activations, logits and the CUDA context stay per GPU. Not yet calibrated on GPUs (issue 8)."""
    if processes < 2 or mode == "single":
        return single
    b = {key: value * GIB for key, value in single.breakdown.items()}
    if mode == "ddp":
        b["ddp_gradient_buckets"] = b["lora_gradients"]
    elif mode == "fsdp":
        layer_weights = (b["weights"] - facts.embedding_params * (4 if single.device == "cpu" else 2)) / max(facts.layers, 1)
        for key in ("weights", "lora_weights", "lora_gradients", "optimizer_states"):
            b[key] /= processes
        b["fsdp_gathered_layers"] = 2 * layer_weights
    else:
        raise ValueError(f"unknown mode {mode}")
    allocated = sum(value for key, value in b.items() if key not in ("allocator", "cuda_context"))
    if single.device != "cpu":
        b["allocator"] = ALLOCATOR_FRACTION * allocated + ALLOCATOR_FIXED_GIB * GIB
    breakdown = {key: round(value / GIB, 4) for key, value in b.items()}
    peak = round(sum(b.values()) / GIB, 2)
    return Estimate(single.method, single.batch_size, single.seq_len, single.gradient_checkpointing,
                    breakdown["weights"], peak, breakdown, liger=single.liger, device=single.device)


def parallel_rows(single: Estimate, facts: ModelFacts, processes: int) -> dict[str, Estimate]:
    """{"single", "ddp", "fsdp"} -> peak per GPU for the micro-batch of `single` (fsdp not for lora-8bit)."""
    rows = {"single": single}
    if processes > 1:
        rows["ddp"] = parallel_estimate(single, facts, processes, "ddp")
        if single.method != "lora-8bit":
            rows["fsdp"] = parallel_estimate(single, facts, processes, "fsdp")
    return rows


def parallel_estimates(facts: ModelFacts, method: str, processes: int, **kwargs: Any) -> dict[str, Estimate]:
    """parallel_rows for the estimate of `method` with `kwargs` (see estimate)."""
    return parallel_rows(estimate(facts, method, **kwargs), facts, processes)


def parallel_mode(per_gpu_gib: dict[str, float], capacity_gib: float | None) -> tuple[str, str]:
    """The rule of `distributed.mode: auto`, for the engine and the wizard alike: DDP when a full copy
    fits on each GPU (or nothing says it doesn't), FSDP when the model fits only sharded, else DDP
    (it fits nowhere: the estimate says so). Returns (mode, "fits-each" | "fits-sharded" | "fits-nowhere")."""
    if capacity_gib is None or "ddp" not in per_gpu_gib or per_gpu_gib["ddp"] <= capacity_gib:
        return "ddp", "fits-each"
    if "fsdp" in per_gpu_gib and per_gpu_gib["fsdp"] <= capacity_gib:
        return "fsdp", "fits-sharded"
    return "ddp", "fits-nowhere"


def multi_gpu_choice(single: Estimate, facts: ModelFacts, gpu_count: int, capacity_gib: float | None) -> dict[str, Any]:
    """Per-GPU peaks for one GPU, DDP and FSDP over `gpu_count` GPUs, and the one to use with why."""
    rows = parallel_rows(single, facts, gpu_count)
    per_gpu = {mode: {"peak_gib": row.peak_gib, **({"fits": verdict(row.peak_gib, capacity_gib)} if capacity_gib else {})}
               for mode, row in rows.items()}
    recommended, fit = parallel_mode({mode: row.peak_gib for mode, row in rows.items()}, capacity_gib)
    why = {"fits-each": f"a full copy fits on each GPU: {gpu_count}x the examples per step",
           "fits-sharded": "fits only with the weights sharded across the GPUs",
           "fits-nowhere": "does not fit even sharded: use QLoRA, a smaller micro-batch or checkpointing"}[fit]
    return {"gpus": gpu_count, "per_gpu": per_gpu, "recommended": recommended, "why": why}


def verdict(peak_gib: float, capacity_gib: float) -> str:
    """'fits', 'tight' (within 10% of the free memory) or 'no'."""
    if peak_gib <= (1 - TIGHT_SHARE) * capacity_gib:
        return "fits"
    if peak_gib <= capacity_gib:
        return "tight"
    return "no"


# --- the fastest settings that fit ---------------------------------------------------------------

def _relative_speed(facts: ModelFacts, tokens: int, gradient_checkpointing: bool) -> float:
    """Tokens per second up to a constant: a fixed cost per micro-batch, then compute (+1/3 with recomputation)."""
    seconds_per_token = 6 * facts.total_params / (PEAK_BF16_FLOPS * 0.5)
    overhead_tokens = STEP_OVERHEAD_S / seconds_per_token
    return tokens / (overhead_tokens + tokens * (GRADIENT_CHECKPOINTING_COST if gradient_checkpointing else 1.0))


def suggested_max_length(token_lengths: Sequence[int] | None, configured: int, max_positions: int) -> int:
    """p99 of the real token lengths rounded up to a multiple of 64, within the configured length and the model's."""
    if not token_lengths:
        return min(configured, max_positions)
    ordered = sorted(token_lengths)
    p99 = ordered[min(len(ordered) - 1, int(math.ceil(0.99 * len(ordered))) - 1)]
    return max(64, min(configured, max_positions, int(math.ceil(p99 / 64) * 64)))


def examples_per_row(token_lengths: Sequence[int] | None, max_length: int, packing: bool) -> float:
    """Examples a packed row of `max_length` tokens holds on average (truncated examples count as full)."""
    if not packing:
        return 1.0
    if not token_lengths:
        return 2.0  # no data seen yet: a guess, refined once the dataset's lengths are known
    mean_length = sum(min(length, max_length) for length in token_lengths) / len(token_lengths)
    return max(1.0, max_length / max(mean_length, 1.0))


def fastest_settings(facts: ModelFacts, method: str, gpu_gib: float | None, token_lengths: Sequence[int] | None = None,
                     rank: int = 16, max_length: int = 1024, target_examples: int = 16, device: str | None = None,
                     packing: bool = True, liger: bool | None = None,
                     lora_dropout: float = DEFAULT_LORA_DROPOUT) -> dict[str, Any]:
    """Micro-batch, accumulation, checkpointing and max length that train fastest within `gpu_gib`.

    The effective batch stays near `target_examples` examples (packed rows hold several); within that,
    the largest micro-batch wins, and checkpointing stays off whenever it fits (recomputation costs ~30%).
    On the CPU (gpu_gib None) compute is the limit, not memory: a small micro-batch, no checkpointing
    unless the run would not fit in free memory."""
    device = device or ("cuda" if gpu_gib else "cpu")
    length = suggested_max_length(token_lengths, max_length, facts.max_positions)
    per_row = examples_per_row(token_lengths, length, packing)

    def accumulation(batch: int) -> int:
        return max(1, round(target_examples / (batch * per_row)))

    def settings(result: Estimate, note: str | None = None) -> dict[str, Any]:
        chosen = {"batch_size": result.batch_size, "grad_accum": accumulation(result.batch_size),
                  "gradient_checkpointing": result.gradient_checkpointing, "max_length": length,
                  "peak_gib": result.peak_gib, "fits": result.fits,
                  "examples_per_step": round(result.batch_size * per_row * accumulation(result.batch_size), 1)}
        if note:
            chosen["note"] = note
        return chosen

    if device == "cpu" or not gpu_gib:
        from core.hardware import system_memory_gib

        available = system_memory_gib()[1] or None
        batch = max(1, min(2, round(target_examples / per_row)))
        result = estimate(facts, method, batch, length, rank, False, device="cpu", capacity_gib=available,
                          lora_dropout=lora_dropout)
        if result.fits == "no":
            result = estimate(facts, method, 1, length, rank, True, device="cpu", capacity_gib=available,
                              lora_dropout=lora_dropout)
        return settings(result)

    # Micro-batches that keep the effective batch near the target: one per accumulation count.
    batches = sorted({max(1, round(target_examples / (per_row * accum))) for accum in range(1, target_examples + 1)},
                     reverse=True)
    best: tuple[float, Estimate] | None = None
    fallback: Estimate | None = None
    for batch in batches:
        for checkpointing in (False, True):
            result = estimate(facts, method, batch, length, rank, checkpointing, capacity_gib=gpu_gib, liger=liger,
                              lora_dropout=lora_dropout)
            if result.fits == "tight" and fallback is None:
                fallback = result
            if result.fits != "fits":
                continue
            speed = _relative_speed(facts, batch * length, checkpointing)
            if best is None or speed > best[0]:
                best = (speed, result)
    if best is not None:
        return settings(best[1])
    if fallback is not None:
        return settings(fallback, "only a tight fit: close other work on the GPU, or shorten max_length")
    smallest = estimate(facts, method, 1, length, rank, True, capacity_gib=gpu_gib, liger=liger,
                              lora_dropout=lora_dropout)
    shorter = length
    while shorter > 64:
        shorter = max(64, (shorter // 2) // 64 * 64)
        if estimate(facts, method, 1, shorter, rank, True, capacity_gib=gpu_gib, liger=liger,
                              lora_dropout=lora_dropout).fits == "fits":
            return settings(smallest, f"does not fit even at micro-batch 1 with checkpointing; max_length {shorter} "
                                      "would, or a smaller model or a method with fewer bits")
    return settings(smallest, "does not fit even at micro-batch 1 with checkpointing; pick a smaller model, "
                              "a method with fewer bits or a bigger GPU")


# --- lora-wizard estimate ------------------------------------------------------------------------

def _token_for(model: str) -> str | None:
    """The stored Hub token, only when the model must come from the Hub (no keyring call otherwise)."""
    from core.catalog import lookup

    if Path(os.path.expanduser(model)).is_dir() or lookup(model):
        return None
    try:
        from core.hub import get_token

        return get_token()[0]
    except Exception:  # no keyring answer: public models still work without a token
        return None


def estimate_command(args) -> int:
    """`lora-wizard estimate MODEL [--method M] [--batch-size B --seq-len S --rank R] [--gpu-gib G] [--json]`."""
    from core.hardware import describe, detect_gpus

    if getattr(args, "list", False) or not getattr(args, "model", None):
        from core.catalog import describe_catalog

        print(describe_catalog())
        return 0
    facts = model_facts(args.model, token=_token_for(args.model))
    gpus = [] if args.gpu_gib else detect_gpus()
    capacity = args.gpu_gib or (min(g.free_gib for g in gpus) if gpus else None)
    gpu_count = getattr(args, "gpus", None) or len(gpus)
    methods = [args.method] if args.method else list(METHODS)
    choice = {"on": [True], "off": [False], "auto": [False, True]}[args.gradient_checkpointing]
    liger = liger_available()
    rows = [estimate(facts, m, args.batch_size, args.seq_len, args.rank, gc, capacity_gib=capacity, liger=liger)
            for m in methods for gc in choice]
    fastest = {m: fastest_settings(facts, m, capacity, rank=args.rank, max_length=args.seq_len, liger=liger)
               for m in methods} if capacity else {}
    # Per method, the row a person would run: checkpointing off when it fits, else on.
    primary = {m: next((r for r in rows if r.method == m and r.fits == "fits"), [r for r in rows if r.method == m][-1])
               for m in methods}
    multi_gpu = {m: multi_gpu_choice(primary[m], facts, gpu_count, capacity) for m in methods} if gpu_count > 1 else {}
    if args.json:
        methods_out = {}
        for method in methods:
            methods_out[method] = {**primary[method].to_dict(),
                                   "estimates": [r.to_dict() for r in rows if r.method == method],
                                   "fastest_settings": fastest.get(method)}
            if method in multi_gpu:
                methods_out[method]["multi_gpu"] = multi_gpu[method]
        print(json.dumps({"model": facts.name, "parameters": facts.total_params, "gpus": [g.to_dict() for g in gpus],
                          "capacity_gib": capacity, "liger": liger, "cuda_context_gib": CUDA_CONTEXT_GIB,
                          "methods": methods_out}, indent=2))
        return 0
    where = f"a {args.gpu_gib:g} GiB GPU" if args.gpu_gib else describe(gpus)
    print(f"{facts.name}: {facts.total_params / 1e9:.2f}B parameters; micro-batch {args.batch_size} x {args.seq_len} "
          f"tokens, LoRA rank {args.rank}, Liger {'on' if liger else 'off'}; against {where}")
    header = f"{'method':<10} {'checkpointing':<13} {'weights':>8} {'adapter':>8} {'activ.':>8} {'logits':>8} " \
             f"{'other':>8} {'peak':>8}  fits"
    print(header)
    for row in rows:
        b = row.breakdown
        adapter = b["lora_weights"] + b["lora_gradients"] + b["optimizer_states"]
        other = row.peak_gib - row.weights_gib - adapter - b["activations"] - b["logits_and_loss"]
        print(f"{row.method:<10} {'on' if row.gradient_checkpointing else 'off':<13} {row.weights_gib:>7.1f}G "
              f"{adapter:>7.2f}G {b['activations']:>7.1f}G {b['logits_and_loss']:>7.1f}G {other:>7.1f}G "
              f"{row.peak_gib:>7.1f}G  {row.fits if capacity else '-'}")
    if not capacity:
        print("peak = what must be free on the GPU (CUDA context included); give --gpu-gib to check a card size.")
    if multi_gpu:
        print(f"over {gpu_count} GPUs, per GPU (same micro-batch, checkpointing as in the fitting row):")
        for method, choice in multi_gpu.items():
            options = ", ".join(f"{mode} {value['peak_gib']:.1f}G" for mode, value in choice["per_gpu"].items())
            print(f"  {method:<10} {options}  -> {choice['recommended']}: {choice['why']}")
    for method, settings in fastest.items():
        line = (f"fastest for {method}: micro-batch {settings['batch_size']} x {settings['max_length']}, accumulation "
                f"{settings['grad_accum']}, checkpointing {'on' if settings['gradient_checkpointing'] else 'off'} "
                f"({settings['peak_gib']:.1f} GiB, {settings['fits']})")
        print(line + (f"; {settings['note']}" if settings.get("note") else ""))
    return 0
