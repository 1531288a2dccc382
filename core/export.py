"""Exporting a run: the adapter as is, a merged 16-bit model, and pushing either to the Hub.

A QLoRA or 8-bit adapter was trained against the quantized base, so by default the merge adds
the LoRA delta to the *dequantized* base weights (what the adapter actually saw), not to the
original 16-bit weights; `into_original=True` offers the latter, with a warning that answers may
drift. Before reporting success the merged model, loaded back with AutoModelForCausalLM, must
give the same greedy answers as adapter-on-base on a few prompts from the run's own data.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from core.errors import UserError

log = logging.getLogger(__name__)

Progress = Callable[[str], Any]
PARITY_TOKENS = 24
LOGIT_TOLERANCE = 0.05  # relative logit difference 16-bit rounding stays within (measured 1-3% in bf16)
FALLBACK_PROMPTS = ["Hello! Who are you?", "Write one sentence about the sea.", "What is 2 + 3?"]


@dataclass
class MergeReport:
    out_dir: Path
    dtype: str
    prompts: list[str] = field(default_factory=list)
    matches: list[bool] = field(default_factory=list)
    first_difference: list[int | None] = field(default_factory=list)
    # Teacher-forced on adapter-on-base's answers: how far the merged model's logits are from it, relative
    # to its logits, and how far the adapter itself moves the base's (the scale a broken merge shows at).
    logit_error: float | None = None
    adapter_effect: float | None = None
    same_next_token: float | None = None

    @property
    def rounding_only(self) -> bool:
        """Greedy answers differ, but only as 16-bit rounding does: logits within a few percent, far
        closer to adapter-on-base than the adapter moved them (a merge that lost or mis-scaled the
        adapter is off by the adapter's whole effect)."""
        return (self.logit_error is not None and self.adapter_effect is not None
                and self.logit_error <= LOGIT_TOLERANCE and self.logit_error <= 0.1 * self.adapter_effect)

    @property
    def ok(self) -> bool:
        return bool(self.matches) and (all(self.matches) or self.rounding_only)

    def summary(self) -> str:
        agree = sum(self.matches)
        text = f"{agree}/{len(self.matches)} prompts give the same greedy answer merged as adapter-on-base"
        if all(self.matches) or self.logit_error is None:
            return text
        verdict = "16-bit rounding, the merge is sound" if self.rounding_only else "the merge does not reproduce the adapter"
        return (f"{text}; on its answers the merged logits are within {self.logit_error:.1%} (the adapter moves them "
                f"{self.adapter_effect:.0%}) and pick the same next token at {self.same_next_token:.0%} of positions: "
                f"{verdict}")


def parity_prompts(run_dir: Path, count: int = 3) -> list[str]:
    """Prompts from the run's own data (what the adapter learned), else generic ones."""
    try:
        from core.config import load_config
        from core.data import load_dataset_for

        config = load_config(run_dir / "config.yaml")
        examples = load_dataset_for(config.data).examples
        prompts = []
        for row in examples.select(range(min(len(examples), 50))):
            if "prompt" in row:
                users = [m["content"] for m in row["prompt"] if m["role"] == "user"]
                if users and len(users[-1]) < 2000:
                    prompts.append(users[-1])
            if len(prompts) >= count:
                break
        if prompts:
            return prompts
    except Exception as error:  # the data may have moved since training: generic prompts still check the merge
        log.info("parity prompts from the run's data unavailable (%s)", error)
    return FALLBACK_PROMPTS[:count]


def _dequantized_weights(config, dtype) -> dict[str, Any]:
    """name -> dequantized weight (CPU, `dtype`) for every quantized linear layer of the base, as trained."""
    from peft.utils.integrations import dequantize_bnb_weight

    from core.model import load_base

    base = load_base(config)
    weights = {}
    for name, module in base.named_modules():
        weight = getattr(module, "weight", None)
        if weight is not None and weight.__class__.__name__ in ("Params4bit", "Int8Params"):
            weights[f"{name}.weight"] = dequantize_bnb_weight(weight, state=getattr(module, "state", None)).to(dtype).cpu()
    del base
    gc.collect()
    return weights


def merge(run_dir: str | os.PathLike, out_dir: str | os.PathLike, into_original: bool = False,
          progress: Progress | None = None, check: bool = True) -> MergeReport:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from core.config import load_config
    from core.model import load_tokenizer, precision_for, resolve_token

    say = progress or (lambda message: None)
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    config = load_config(run_dir / "config.yaml")
    adapter_dir = run_dir / "adapter"
    if not (adapter_dir / "adapter_config.json").exists():
        raise UserError(f"{run_dir} has no trained adapter yet; train it first (or wait for it to finish).")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir} already exists and is not empty; choose a new folder for the merged model.")
    precision = precision_for(config.method)
    dtype = precision.dtype  # bf16 (fp16 on older GPUs); fp32 on the CPU, where the run computed in fp32

    dequantized = {}
    if config.method != "lora" and not into_original:
        say("dequantizing the base weights the adapter was trained against")
        dequantized = _dequantized_weights(config, dtype)
    elif config.method != "lora":
        log.warning("merging into the original 16-bit weights: the adapter was trained on quantized ones, answers may drift")

    say("loading the 16-bit base")
    try:
        base = AutoModelForCausalLM.from_pretrained(config.model, revision=config.revision, token=resolve_token(None, config.model),
                                                    dtype=dtype, use_safetensors=True, device_map="cpu",
                                                    trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError) as error:
        from core.model import _model_error

        raise _model_error(config.model, error) from None
    if dequantized:
        state = base.state_dict()
        missing = [name for name in dequantized if name not in state]
        if missing:
            raise RuntimeError(f"dequantized weights with no place in the 16-bit model: {missing[:3]}")
        with torch.no_grad():
            for name, weight in dequantized.items():
                state[name].copy_(weight.view_as(state[name]))
        del dequantized
    say("adding the LoRA delta")
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    say(f"saving to {out_dir}")
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        merged.save_pretrained(str(partial), safe_serialization=True)
        tokenizer = load_tokenizer(str(adapter_dir))
        tokenizer.save_pretrained(str(partial))
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise UserError(f"could not write the merged model to {out_dir} ({error.strerror}); free disk space or pick another folder.") from None
    if out_dir.exists():
        out_dir.rmdir()
    os.replace(partial, out_dir)
    del merged, base
    gc.collect()

    report = MergeReport(out_dir, str(dtype).removeprefix("torch."))
    if check:
        _check_parity(run_dir, out_dir, report, say)
    return report


def _check_parity(run_dir: Path, out_dir: Path, report: MergeReport, say: Progress) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.infer import ChatSession

    prompts = parity_prompts(run_dir)
    say("checking that the merged model answers like adapter-on-base")
    session = ChatSession(run_dir)
    expected, sequences, adapter_logits, base_logits = [], [], [], []
    for prompt in prompts:
        want = session.greedy_ids(prompt, adapter=True, max_new_tokens=PARITY_TOKENS)
        prompt_ids = session.prompt_ids(prompt)
        sequence = torch.cat([prompt_ids, torch.tensor(want, dtype=prompt_ids.dtype, device=prompt_ids.device)])
        expected.append(want)
        sequences.append((sequence, len(prompt_ids)))
        adapter_logits.append(_answer_logits(session.model, sequence, len(prompt_ids)))
        with session.model.disable_adapter():
            base_logits.append(_answer_logits(session.model, sequence, len(prompt_ids)))
    device = session.model.device
    del session
    gc.collect()
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    model = AutoModelForCausalLM.from_pretrained(str(out_dir), dtype="auto", device_map={"": device})
    model.eval()
    merged_logits = []
    for prompt, want, (sequence, prompt_length) in zip(prompts, expected, sequences):
        inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True).to(device)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=PARITY_TOKENS, do_sample=False, temperature=None,
                                    top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id,
                                    eos_token_id=tokenizer.eos_token_id)
        got = output[0, inputs["input_ids"].shape[1]:].tolist()
        report.prompts.append(prompt)
        report.matches.append(got == want)
        report.first_difference.append(next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                                            None if len(got) == len(want) else min(len(got), len(want))))
        merged_logits.append(_answer_logits(model, sequence.to(device), prompt_length))
    del model
    gc.collect()
    adapter, base, merged = (torch.cat(x) for x in (adapter_logits, base_logits, merged_logits))
    if adapter.numel():
        scale = adapter.norm().item() or 1.0
        report.logit_error = (merged - adapter).norm().item() / scale
        report.adapter_effect = (base - adapter).norm().item() / scale
        report.same_next_token = (merged.argmax(-1) == adapter.argmax(-1)).float().mean().item()


def _answer_logits(model, sequence, prompt_length: int):
    """fp32 CPU logits at the positions that predict the answer's tokens (teacher-forced)."""
    import torch

    with torch.inference_mode():
        logits = model(input_ids=sequence[None]).logits[0, prompt_length - 1:-1]
    return logits.float().cpu()


def push(run_dir: str | os.PathLike, repo_id: str, private: bool = True, token: str | None = None,
         folder: str | os.PathLike | None = None, progress: Progress | None = None) -> str:
    """Pushes the adapter (or `folder`, e.g. a merged model) with its model card; returns the repo URL."""
    from core.hub import push_folder
    from core.model import resolve_token

    run_dir = Path(run_dir)
    folder = Path(folder) if folder else run_dir / "adapter"
    if not (folder / "config.json").exists() and not (folder / "adapter_config.json").exists():
        raise UserError(f"{folder} holds no model or adapter to push; train or merge first.")
    if not (folder / "README.md").exists() and (run_dir / "adapter" / "README.md").exists():
        shutil.copy(run_dir / "adapter" / "README.md", folder / "README.md")
    token = resolve_token(token)
    if not token:
        raise UserError("pushing needs a Hugging Face token with write access; run lora-wizard login first.")
    if progress:
        progress(f"pushing {folder} to {repo_id} ({'private' if private else 'public'})")
    return push_folder(str(folder), repo_id, private=private, token=token,
                       commit_message="Upload fine-tuned model from lora-wizard")


def export_command(args) -> int:
    """`lora-wizard export RUN_DIR [--merge OUT_DIR] [--push REPO_ID [--private]]`."""
    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").exists():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); list runs with lora-wizard runs.")
    adapter_dir = run_dir / "adapter"
    if not (adapter_dir / "adapter_config.json").exists():
        raise UserError(f"{run_dir} has no trained adapter yet; train it first (or wait for it to finish).")
    if not args.merge and not args.push:
        size = sum(p.stat().st_size for p in adapter_dir.iterdir() if p.is_file())
        print(f"adapter: {adapter_dir} ({size / 1e6:.1f} MB); use --merge OUT_DIR and/or --push REPO_ID")
        return 0
    folder = None
    if args.merge:
        report = merge(run_dir, args.merge, into_original=args.merge_into_original, progress=print)
        print(f"merged {report.dtype} model saved to {report.out_dir}; {report.summary()}")
        if not report.ok:
            print("lora-wizard: the merged model does not answer like adapter-on-base on every prompt; "
                  "use the adapter, or --merge-into-original to compare.", flush=True)
            return 1
        folder = report.out_dir
    if args.push:
        url = push(run_dir, args.push, private=args.private, folder=folder, progress=print)
        print(f"pushed to {url}")
    return 0
