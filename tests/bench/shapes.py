"""Real architectures at real sizes with random weights, and token-exact synthetic data, for GPU runs.

No weights can be downloaded on the GPU machine; throughput and memory do not depend on weight
values. A word-level tokenizer with exactly the model's vocabulary size makes every synthetic word
one token, so example lengths are exact: instruction-like rows whose lengths follow a log-normal
with median ~180 tokens, capped at 512 (../shared/gpu.md).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

SHAPES = {
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True,
                         rope_theta=500000.0, max_position_embeddings=131072, rms_norm_eps=1e-5),
    "llama-3-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False,
                       rope_theta=500000.0, max_position_embeddings=8192, rms_norm_eps=1e-5),
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
                       rope_theta=1000000.0, max_position_embeddings=32768, rms_norm_eps=1e-6),
}
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def word_tokenizer(vocab_size: int):
    """A real (word-level) fast tokenizer of exactly `vocab_size` tokens with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from core.tiny import CHATML_TEMPLATE

    words = SPECIAL + ["user", "assistant", "system", "\n"] + [f"w{i}" for i in range(vocab_size - len(SPECIAL) - 4)]
    vocab = {word: index for index, word in enumerate(words)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="removed")
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    # Spaces around every token so the word-level split sees each one.
    fast.chat_template = (
        "{% for message in messages %}{{ '<|im_start|> ' + message['role'] + ' ' + message['content'] + ' <|im_end|> ' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|> assistant ' }}{% endif %}"
    )
    return fast


def build_shaped_model(name: str, out_dir: str | Path, device: str = "cuda") -> Path:
    """Saves a randomly initialised bf16 model of shape `name` (and its tokenizer) once; returns the folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists() and any(out_dir.glob("*.safetensors")):
        return out_dir
    shape = dict(SHAPES[name])
    model_type = shape.pop("model_type")
    tokenizer = word_tokenizer(shape["vocab_size"])
    config = AutoConfig.for_model(model_type, **shape, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id, bos_token_id=None, dtype="bfloat16")
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out_dir, max_shard_size="5GB")
    tokenizer.save_pretrained(out_dir)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out_dir


def synthetic_rows(count: int, vocab_size: int, seed: int = 0, median: float = 180, sigma: float = 0.6,
                   cap: int = 512) -> list[dict]:
    """Alpaca rows of random words whose rendered length is log-normal (median ~`median`), capped at `cap`."""
    rng = random.Random(seed)
    rows = []
    overhead = 6  # chat-template tokens around a single-turn exchange
    for _ in range(count):
        total = min(cap, max(24, int(rng.lognormvariate(math.log(median), sigma))))
        body = total - overhead
        prompt_len = max(4, int(body * rng.uniform(0.3, 0.7)))
        answer_len = max(2, body - prompt_len)
        words = lambda n: " ".join(f"w{rng.randrange(vocab_size - 8)}" for _ in range(n))  # noqa: E731
        rows.append({"instruction": words(prompt_len), "input": "", "output": words(answer_len)})
    return rows


def write_rows(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
