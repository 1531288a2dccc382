"""Chatting with a run: base + adapter loaded once, in the run's precision; the adapter toggled
off (not a second model) for the base model's answers. Generation is a generator of text pieces.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Iterator


class ChatSession:
    def __init__(self, run_dir: str | os.PathLike, token: str | None = None, adapter_subdir: str = "adapter"):
        from core.model import load_for_inference

        self.run_dir = Path(run_dir)
        self.model, self.tokenizer, self.config = load_for_inference(self.run_dir, token, adapter_subdir)
        self._lock = threading.Lock()  # one generation at a time on the one model

    def _inputs(self, messages: list[dict[str, str]]):
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                     return_dict=True)
        return {key: value.to(self.model.device) for key, value in encoded.items()}

    def prompt_ids(self, prompt: str):
        """The token ids a one-turn chat with `prompt` hands the model (template and generation prompt included)."""
        return self._inputs([{"role": "user", "content": prompt}])["input_ids"][0]

    def _generate_kwargs(self, max_new_tokens: int, temperature: float) -> dict:
        kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                      eos_token_id=self.tokenizer.eos_token_id)
        if temperature and temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=0.95)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def stream(self, messages: list[dict[str, str]], adapter: bool = True, max_new_tokens: int = 256,
               temperature: float = 0.0) -> Iterator[str]:
        """Yields the answer's text as it is generated."""
        import torch
        from transformers import TextIteratorStreamer

        with self._lock:
            inputs = self._inputs(messages)
            streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300)
            failure: list[BaseException] = []

            def generate():
                try:
                    with torch.inference_mode():
                        if adapter:
                            self.model.generate(**inputs, streamer=streamer, **self._generate_kwargs(max_new_tokens, temperature))
                        else:
                            with self.model.disable_adapter():
                                self.model.generate(**inputs, streamer=streamer, **self._generate_kwargs(max_new_tokens, temperature))
                except BaseException as error:  # surfaced in the caller's thread below
                    failure.append(error)
                    streamer.end()

            worker = threading.Thread(target=generate, daemon=True)
            worker.start()
            yield from streamer
            worker.join()
            if failure:
                raise failure[0]

    def answer(self, messages: list[dict[str, str]], adapter: bool = True, max_new_tokens: int = 256,
               temperature: float = 0.0) -> str:
        return "".join(self.stream(messages, adapter, max_new_tokens, temperature)).strip()

    def greedy_ids(self, prompt: str, adapter: bool = True, max_new_tokens: int = 32) -> list[int]:
        """Greedy answer token ids: what the export's parity check compares."""
        import torch

        inputs = self._inputs([{"role": "user", "content": prompt}])
        with torch.inference_mode():
            if adapter:
                output = self.model.generate(**inputs, **self._generate_kwargs(max_new_tokens, 0.0))
            else:
                with self.model.disable_adapter():
                    output = self.model.generate(**inputs, **self._generate_kwargs(max_new_tokens, 0.0))
        return output[0, inputs["input_ids"].shape[1]:].tolist()


def _messages(system: str | None, history: list[dict[str, str]]) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + history


def _print_stream(label: str, pieces: Iterator[str]) -> str:
    print(f"{label}: ", end="", flush=True)
    text = []
    for piece in pieces:
        text.append(piece)
        print(piece, end="", flush=True)
    print(flush=True)
    return "".join(text)


def chat_command(args) -> int:
    """`lora-wizard chat RUN_DIR [--prompt TEXT] [--compare]`."""
    from core.errors import UserError

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").exists():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); list runs with lora-wizard runs.")
    print(f"loading {run_dir} ...", file=sys.stderr, flush=True)
    session = ChatSession(run_dir)
    options = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    if args.prompt is not None:
        history = [{"role": "user", "content": args.prompt}]
        if args.compare:
            _print_stream("base", session.stream(_messages(args.system, history), adapter=False, **options))
        _print_stream("tuned" if args.compare else "assistant", session.stream(_messages(args.system, history), **options))
        return 0
    print("chat with the fine-tuned model; /base toggles the adapter, /reset clears the history, /quit or Ctrl-D ends.",
          file=sys.stderr)
    history: list[dict[str, str]] = []
    adapter = True
    while True:
        try:
            text = input("you: ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        command = text.strip()
        if command in ("/quit", "/exit"):
            return 0
        if command == "/reset":
            history = []
            continue
        if command == "/base":
            adapter = not adapter
            print(f"adapter {'on' if adapter else 'off'}", file=sys.stderr)
            continue
        if not command:
            continue
        history.append({"role": "user", "content": text})
        if args.compare:
            _print_stream("base", session.stream(_messages(args.system, history), adapter=False, **options))
        answer = _print_stream("tuned" if adapter else "base", session.stream(_messages(args.system, history),
                                                                            adapter=adapter, **options))
        history.append({"role": "assistant", "content": answer})
