"""Loading a base model per method, attaching LoRA, and reloading base + adapter for inference.

Methods: `lora` (16-bit base: bf16 where the GPU supports it, fp16 otherwise, fp32 on the CPU),
`lora-8bit` (LLM.int8 base) and `qlora` (NF4 base with double quantization, bf16/fp16 compute).
torch, transformers and peft are imported inside functions: the wizard imports this module lazily.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import RunConfig
from core.errors import ModelError

log = logging.getLogger(__name__)


@dataclass
class Precision:
    device: str  # "cuda" or "cpu"
    dtype: Any  # torch dtype of the unquantized weights
    compute_dtype: Any  # dtype of the matmuls of quantized layers
    bf16: bool
    fp16: bool

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def precision_for(method: str) -> Precision:
    import torch

    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return Precision("cuda", torch.bfloat16, torch.bfloat16, bf16=True, fp16=False)
        return Precision("cuda", torch.float16, torch.float16, bf16=False, fp16=True)
    # The CPU runs 16-bit LoRA in fp32 (bf16 matmuls are slow there); bitsandbytes' CPU kernels take
    # fp32 activations around their int8 / NF4 weights.
    return Precision("cpu", torch.float32, torch.float32, bf16=False, fp16=False)


def quantization_config(method: str, precision: Precision):
    from transformers import BitsAndBytesConfig

    if method == "lora":
        return None
    if method == "lora-8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if method == "qlora":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=precision.compute_dtype,
            # FSDP flattens the 4-bit weights with the rest: they must be stored in the compute dtype
            # (peft's QLoRA + FSDP recipe); on one GPU the default uint8 storage is kept.
            **({"bnb_4bit_quant_storage": precision.compute_dtype} if _under_fsdp() else {}),
        )
    raise ValueError(f"unknown method {method}")


def _under_fsdp() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


def resolve_token(token: str | None, model: str | None = None) -> str | None:
    """The token to use for `model`: none for a local folder (no keyring prompt for what needs no Hub)."""
    if token:
        return token
    if model is not None and os.path.isdir(os.path.expanduser(model)):
        return None
    try:
        from core.hub import get_token
    except ImportError:
        return os.environ.get("HF_TOKEN")
    try:
        return get_token()[0]
    except Exception:  # a keyring problem must not stop a local or public model from loading
        return os.environ.get("HF_TOKEN")


def _model_error(model: str, error: Exception) -> ModelError:
    text = str(error)
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    if "gated" in text.lower() or "401" in text or "403" in text or "restricted" in text.lower():
        return ModelError(
            f"'{model}' is gated: request access at https://huggingface.co/{model} and log in with a token that has it."
        )
    if "not a valid model identifier" in text or "Repository Not Found" in text or "404" in text:
        return ModelError(
            f"no model '{model}' on the Hub or on disk; check the spelling (org/name) or give a local folder with config.json."
        )
    if "offline" in text.lower() or "couldn't connect" in text.lower() or "connection" in text.lower():
        return ModelError(f"cannot reach the Hub to fetch '{model}'; check the connection, or give a local folder.")
    if "safetensors" in text.lower() and ".bin" in text:
        return ModelError(f"'{model}' has only pickle (.bin) weights; lora-wizard loads safetensors only, for safety.")
    if "trust_remote_code" in text:
        return ModelError(
            f"'{model}' needs its own Python code to load; set trust_remote_code: true only if you trust its author."
        )
    return ModelError(f"could not load '{model}': {first}")


def check_model_source(model: str) -> None:
    """A local path must be a model folder; anything else must look like a Hub id (org/name or name)."""
    if not model:
        raise ModelError("no model given; give a Hub id like Qwen/Qwen2.5-0.5B-Instruct or a local folder.")
    expanded = os.path.expanduser(model)
    looks_local = model.startswith((".", "/", "~")) or os.sep in model and os.path.exists(expanded)
    if os.path.isdir(expanded):
        if not os.path.exists(os.path.join(expanded, "config.json")) and not os.path.exists(
                os.path.join(expanded, "adapter_config.json")):
            raise ModelError(f"{model} has no config.json; point at the folder save_pretrained wrote.")
        return
    if looks_local or model.count("/") > 1:
        raise ModelError(f"model folder {model} does not exist; check the path, or give a Hub id (org/name).")


def load_tokenizer(model: str, revision: str | None = None, token: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    check_model_source(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model, revision=revision, token=resolve_token(token, model), trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as error:
        raise _model_error(model, error) from None
    if tokenizer.pad_token is None:
        # A pad token that differs from eos keeps eos in the labels (the model learns to stop).
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def load_base(config: RunConfig, token: str | None = None, device_map: Any = None, attn_implementation: str | None = None):
    """The base model in the method's precision, frozen, ready for an adapter."""
    import torch
    from transformers import AutoModelForCausalLM

    check_model_source(config.model)
    if config.trust_remote_code:
        log.warning("trust_remote_code is on: the model repository's own Python code will run.")
    precision = precision_for(config.method)
    if device_map is None:
        if precision.device == "cuda":
            device_map = {"": torch.cuda.current_device() if "LOCAL_RANK" not in os.environ else int(os.environ["LOCAL_RANK"])}
        else:
            device_map = "cpu"
    kwargs: dict[str, Any] = dict(
        revision=config.revision,
        token=resolve_token(token, config.model),
        trust_remote_code=config.trust_remote_code,
        use_safetensors=True,
        dtype=precision.dtype,
        device_map=device_map,
        quantization_config=quantization_config(config.method, precision),
    )
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(config.model, **kwargs)
    except (OSError, ValueError) as error:
        raise _model_error(config.model, error) from None
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def lora_config(config: RunConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        use_dora=config.lora.use_dora,
        use_rslora=config.lora.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_for_training(config: RunConfig, token: str | None = None, gradient_checkpointing: bool = False,
                      attn_implementation: str | None = None):
    """(PeftModel with trainable LoRA weights, tokenizer)."""
    from peft import get_peft_model

    tokenizer = load_tokenizer(config.model, config.revision, token, config.trust_remote_code)
    model = load_base(config, token, attn_implementation=attn_implementation)
    # k-bit preparation is done here rather than with peft's prepare_model_for_kbit_training, which upcasts
    # every unquantized weight to fp32: under bf16 autocast norms and embeddings compute fine in bf16, and
    # upcasting a 128k-token embedding and head alone costs ~2 GiB on an 8B model. Freezing (load_base),
    # input gradients and checkpointing are what the adapter needs.
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False
    peft_model = get_peft_model(model, lora_config(config))
    if precision_for(config.method).device == "cuda" and os.environ.get("LORA_WIZARD_PEFT_INPUT_CAST") != "1":
        adapters_compute_in_input_dtype(peft_model)
    return peft_model, tokenizer


def adapters_compute_in_input_dtype(model) -> int:
    """Stops peft casting each adapted layer's input to the adapter's dtype; returns the layers changed.

    On a 16-bit base peft keeps LoRA weights in fp32 (good for the optimizer) and casts every adapted
    layer's input to fp32 before the adapter: a full fp32 copy of the activations (and the dropout on
    it) for each of the 7 adapted layers per block. Training runs under 16-bit autocast, where the
    adapter's matmuls run in 16-bit anyway, so the copy buys no precision: it costs bandwidth and
    memory. Set LORA_WIZARD_PEFT_INPUT_CAST=1 to keep peft's behaviour (for comparisons)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    changed = 0
    for module in model.modules():
        if isinstance(module, BaseTunerLayer) and getattr(module, "cast_input_dtype_enabled", False):
            module.cast_input_dtype_enabled = False
            changed += 1
    return changed


def load_for_inference(run_dir: str | os.PathLike, token: str | None = None, adapter_subdir: str = "adapter"):
    """(PeftModel of base + the run's adapter in the run's precision, tokenizer, RunConfig)."""
    from peft import PeftModel

    from core.config import load_config

    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    adapter_dir = run_dir / adapter_subdir
    if not (adapter_dir / "adapter_config.json").exists():
        raise ModelError(f"{run_dir} has no trained adapter yet ({adapter_dir} is missing); train it first or wait for it to finish.")
    tokenizer = load_tokenizer(str(adapter_dir))
    base = load_base(config, token)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    model.eval()
    return model, tokenizer, config
