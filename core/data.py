"""Datasets: load a local file or a Hub dataset, detect its format, turn it into TRL's form.

Every row becomes either a conversational prompt/completion pair (alpaca and messages formats;
TRL then trains on the completion only and renders both through the chat template) or a plain
`text` row (language modelling on everything). Rows that do not fit their format are reported
with their row number (1-based, as a person counts lines) and left out; a dataset with no usable
row is a DataError before any model is loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from core.config import DataSettings
from core.errors import DataError

LOCAL_LOADERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".tsv": "csv"}

ALPACA_PROMPT_KEYS = ("instruction", "prompt", "question")
ALPACA_INPUT_KEYS = ("input", "context")
ALPACA_OUTPUT_KEYS = ("output", "response", "completion", "answer")
MESSAGES_KEYS = ("messages", "conversations", "conversation")
TEXT_KEYS = ("text", "content")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "bot": "assistant", "system": "system", "tool": "tool"}

MAX_PROBLEMS_SHOWN = 20


@dataclass
class LoadedData:
    examples: Any  # datasets.Dataset in TRL's form: prompt/completion (conversational) or text
    format: str
    detected: str  # one sentence for the user
    rows_total: int
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def rows_used(self) -> int:
        return len(self.examples)


def _first(row: dict[str, Any], keys: Iterable[str]) -> str | None:
    for key in keys:
        if key in row:
            return key
    return None


def detect_format(columns: list[str], first_row: dict[str, Any] | None = None) -> str:
    """alpaca | messages | text, from the column names (and the first row when names are ambiguous)."""
    lowered = {c.lower(): c for c in columns}
    if _first(lowered, MESSAGES_KEYS):
        return "messages"
    if _first(lowered, ALPACA_PROMPT_KEYS) and _first(lowered, ALPACA_OUTPUT_KEYS):
        return "alpaca"
    if _first(lowered, TEXT_KEYS):
        return "text"
    raise DataError(
        f"cannot tell the dataset's format from its columns ({', '.join(columns) or 'none'}); expected "
        "instruction/input/output (alpaca), messages (role/content) or text; rename the columns or set data.format."
    )


def _is_local(path: str) -> bool:
    return os.path.exists(path) or path.startswith((".", "/", "~")) or Path(path).suffix.lower() in LOCAL_LOADERS


def _scan_json_lines(path: Path) -> None:
    """Finds the first line datasets' JSON reader choked on, to name it for the user."""
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, 1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path.name} line {number} is not UTF-8 text; re-save the file as UTF-8.") from None
            try:
                value = json.loads(text)
            except json.JSONDecodeError as error:
                raise DataError(f"{path.name} line {number} is not valid JSON ({error.msg}); fix or delete that line.") from None
            if not isinstance(value, dict):
                raise DataError(f"{path.name} line {number} is a JSON {type(value).__name__}, not an object with named fields.")


def _read_local(path: Path):
    import datasets

    if path.is_dir():
        try:
            return datasets.load_dataset(str(path), split="train")
        except Exception as error:  # datasets raises many types for unreadable folders
            raise DataError(f"could not read the dataset folder {path}: {str(error).splitlines()[0]}") from None
    suffix = path.suffix.lower()
    if suffix not in LOCAL_LOADERS:
        raise DataError(f"{path.name}: unsupported file type '{suffix}'; use .jsonl, .json, .csv or .parquet.")
    if path.stat().st_size == 0:
        raise DataError(f"{path.name} is empty; add examples, one JSON object per line for .jsonl.")
    loader = LOCAL_LOADERS[suffix]
    if suffix == ".jsonl" and path.stat().st_size < 256 * 1024**2:
        _scan_json_lines(path)  # names the first bad line; Arrow's errors don't
    kwargs: dict[str, Any] = {"delimiter": "\t"} if suffix == ".tsv" else {}
    if suffix == ".json":
        # A .json file may hold a list of rows or be JSON lines; datasets handles both, but not a dict of lists
        # under a key, which is common ("data": [...]): read that ourselves.
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise DataError(f"{path.name} is not UTF-8 text; re-save the file as UTF-8.") from None
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            lists = [v for v in value.values() if isinstance(v, list)]
            if len(lists) == 1:
                return datasets.Dataset.from_list([row if isinstance(row, dict) else {"text": row} for row in lists[0]])
        if isinstance(value, list):
            if not value:
                raise DataError(f"{path.name} holds an empty list; add examples.")
            if not all(isinstance(row, dict) for row in value):
                bad = next(i for i, row in enumerate(value, 1) if not isinstance(row, dict))
                raise DataError(f"{path.name} item {bad} is not an object with named fields.")
            return _from_rows(value)
    try:
        return datasets.load_dataset(loader, data_files=str(path), split="train", **kwargs)
    except Exception as error:
        if suffix in (".jsonl", ".json"):
            _scan_json_lines(path)
            # Rows whose fields change type from line to line defeat Arrow's schema; read them as Python objects.
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            if rows:
                return _from_rows(rows)
        if isinstance(error, UnicodeDecodeError) or "codec can't decode" in str(error):
            raise DataError(f"{path.name} is not UTF-8 text; re-save the file as UTF-8.") from None
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"could not read {path.name}: {first_line}") from None


def _from_rows(rows: list[dict[str, Any]]):
    """A Dataset from Python rows whose fields may change type between rows (kept as JSON text then)."""
    import datasets

    try:
        return datasets.Dataset.from_list(rows)
    except Exception:
        keys = sorted({key for row in rows for key in row})
        as_text = datasets.Dataset.from_list(
            [{key: json.dumps(row[key]) if key in row else None for key in keys} for row in rows])
        try:
            return as_text.map(lambda row: {key: _maybe_json(value) for key, value in row.items()})
        except Exception:  # still no common type (a list in one row, a boolean in the next): keep the JSON text,
            return as_text  # and the format check reports the rows that don't fit


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _read_hub(settings: DataSettings, token: str | None):
    import datasets

    from core.model import resolve_token

    token = resolve_token(token)  # HF_TOKEN, the keyring, or this session's token

    try:
        return datasets.load_dataset(settings.path, settings.subset, split=settings.split, token=token)
    except FileNotFoundError:
        raise DataError(
            f"no dataset '{settings.path}' found locally or on the Hub; check the path or the Hub id (org/name)."
        ) from None
    except ValueError as error:
        message = str(error).splitlines()[0]
        if "split" in message.lower():
            raise DataError(f"dataset '{settings.path}' has no split '{settings.split}'; set data.split ({message}).") from None
        if "config" in message.lower():
            raise DataError(f"dataset '{settings.path}' needs a configuration; set data.subset ({message}).") from None
        raise DataError(f"could not load dataset '{settings.path}': {message}") from None
    except ConnectionError:
        raise DataError(f"cannot reach the Hub to load '{settings.path}'; check the connection or use a local file.") from None
    except Exception as error:
        name = type(error).__name__
        if "Gated" in name or "401" in str(error) or "403" in str(error):
            raise DataError(
                f"dataset '{settings.path}' needs access: request it at https://huggingface.co/datasets/{settings.path} "
                "and log in with a token that has it."
            ) from None
        if "Offline" in name or "offline" in str(error).lower():
            raise DataError(f"'{settings.path}' is not a local file and the Hub is offline; give a local file.") from None
        raise DataError(f"could not load dataset '{settings.path}': {str(error).splitlines()[0] if str(error) else name}") from None


def read_raw(settings: DataSettings, token: str | None = None):
    """The dataset as stored (a datasets.Dataset), before any conversion."""
    path = os.path.expanduser(settings.path)
    if not settings.path:
        raise DataError("no dataset given; set data.path to a .jsonl/.json/.csv/.parquet file or a Hub dataset id.")
    if _is_local(path):
        if not os.path.exists(path):
            raise DataError(f"dataset file {path} does not exist; check the path.")
        dataset = _read_local(Path(path))
    else:
        dataset = _read_hub(settings, token)
    if len(dataset) == 0:
        raise DataError(f"dataset {settings.path} has no rows; add examples.")
    return dataset


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def convert_row(row: dict[str, Any], format: str) -> dict[str, Any]:
    """One raw row in TRL's form; raises ValueError with the reason when the row does not fit `format`."""
    if format == "alpaca":
        prompt_key = _first(row, ALPACA_PROMPT_KEYS)
        output_key = _first(row, ALPACA_OUTPUT_KEYS)
        instruction = _text(row.get(prompt_key)) if prompt_key else None
        output = _text(row.get(output_key)) if output_key else None
        if not instruction or not instruction.strip():
            raise ValueError("its instruction is missing or empty")
        if output is None or not output.strip():
            raise ValueError("its output is missing or empty")
        input_key = _first(row, ALPACA_INPUT_KEYS)
        extra = _text(row.get(input_key)) if input_key else None
        user = instruction.strip() + (f"\n\n{extra.strip()}" if extra and extra.strip() else "")
        prompt = [{"role": "user", "content": user}]
        system = _text(row.get("system"))
        if system and system.strip():
            prompt.insert(0, {"role": "system", "content": system.strip()})
        return {"prompt": prompt, "completion": [{"role": "assistant", "content": output}]}
    if format == "messages":
        key = _first(row, MESSAGES_KEYS)
        messages = row.get(key) if key else None
        if isinstance(messages, str):
            try:
                messages = json.loads(messages)
            except json.JSONDecodeError:
                raise ValueError("its messages are text, not a list of {role, content}") from None
        if not isinstance(messages, list) or not messages:
            raise ValueError("its messages are not a non-empty list of {role, content}")
        turns = []
        for index, message in enumerate(messages, 1):
            if not isinstance(message, dict):
                raise ValueError(f"message {index} is not an object with role and content")
            role = message.get("role", message.get("from"))
            content = message.get("content", message.get("value"))
            role = SHAREGPT_ROLES.get(str(role).lower()) if role is not None else None
            content = _text(content)
            if role is None:
                raise ValueError(f"message {index} has no known role (user, assistant, system; or ShareGPT human/gpt)")
            if content is None:
                raise ValueError(f"message {index} has no text content")
            turns.append({"role": role, "content": content})
        last_assistant = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=None)
        if last_assistant is None:
            raise ValueError("it has no assistant message to learn from")
        if last_assistant == 0:
            raise ValueError("its assistant message has no user message before it")
        # Train on the last assistant turn; the earlier turns are its context (masked).
        return {"prompt": turns[:last_assistant], "completion": [turns[last_assistant]]}
    if format == "text":
        key = _first(row, TEXT_KEYS)
        text = _text(row.get(key)) if key else None
        if not text or not text.strip():
            raise ValueError("its text is missing or empty")
        return {"text": text}
    raise ValueError(f"unknown format {format}")


def load_dataset_for(settings: DataSettings, token: str | None = None) -> LoadedData:
    """Reads, detects and converts a dataset; rows that don't fit are reported by number and left out."""
    import datasets

    raw = read_raw(settings, token)
    columns = list(raw.column_names)
    if settings.format == "auto":
        format = detect_format(columns, raw[0])
        detected = f"Detected the {format} format from the columns {', '.join(columns)}."
    else:
        format = settings.format
        detected = f"Using the {format} format (as configured)."

    problems: list[str] = []
    problem_count = 0
    rows: list[dict[str, Any]] = []
    for number, row in enumerate(raw, 1):
        try:
            rows.append(convert_row(row, format))
        except ValueError as error:
            problem_count += 1
            if len(problems) < MAX_PROBLEMS_SHOWN:
                problems.append(f"row {number} skipped: {error}")
    if not rows:
        first = problems[0] if problems else "no rows"
        raise DataError(
            f"no usable rows in {settings.path} as {format} ({first}); fix the rows or set data.format to the right one."
        )
    examples = datasets.Dataset.from_list(rows)
    return LoadedData(examples, format, detected, len(raw), problems, problem_count)


def ensure_chat_template(tokenizer) -> str | None:
    """Gives a tokenizer without a chat template the stated default (ChatML); returns a note when it did."""
    if getattr(tokenizer, "chat_template", None):
        return None
    from core.tiny import CHATML_TEMPLATE

    tokenizer.chat_template = CHATML_TEMPLATE
    return "The tokenizer has no chat template; using the ChatML template (<|im_start|>role ... <|im_end|>)."


def _tokenize_pair(tokenizer, example: dict[str, Any]) -> tuple[list[int], int]:
    """(token ids of the whole example, number of leading prompt tokens) as TRL renders them."""
    if "text" in example and example.get("text") is not None and "prompt" not in example:
        ids = tokenizer(example["text"])["input_ids"]
        return list(ids) + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []), 0
    prompt_ids = tokenizer.apply_chat_template(example["prompt"], add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]
    full_ids = tokenizer.apply_chat_template(example["prompt"] + example["completion"], tokenize=True,
                                             return_dict=True)["input_ids"]
    prefix = 0
    for a, b in zip(prompt_ids, full_ids):
        if a != b:
            break
        prefix += 1
    return list(full_ids), prefix


def render_preview(tokenizer, example: dict[str, Any], max_length: int | None = None,
                   completion_only_loss: bool = True) -> list[tuple[str, bool]]:
    """The example as the model sees it: [(text, trained)] spans, trained = its tokens carry loss."""
    ids, prompt_len = _tokenize_pair(tokenizer, example)
    if not completion_only_loss:
        prompt_len = 0
    if max_length is not None:
        ids = ids[:max_length]
    spans: list[tuple[str, bool]] = []
    for start, end, trained in ((0, min(prompt_len, len(ids)), False), (min(prompt_len, len(ids)), len(ids), True)):
        if end > start:
            spans.append((tokenizer.decode(ids[start:end]), trained))
    return spans


def labels_for(tokenizer, example: dict[str, Any], completion_only_loss: bool = True) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with prompt tokens at -100: what the trainer computes loss on."""
    ids, prompt_len = _tokenize_pair(tokenizer, example)
    if not completion_only_loss:
        prompt_len = 0
    return ids, [-100] * prompt_len + ids[prompt_len:]


def token_lengths(tokenizer, examples, limit: int | None = None) -> list[int]:
    """Token counts of examples rendered through the chat template (all of them unless `limit`)."""
    count = len(examples) if limit is None else min(limit, len(examples))
    subset = examples.select(range(count)) if count < len(examples) else examples
    if "text" in subset.column_names:
        encoded = tokenizer(subset["text"])["input_ids"]
        return [len(ids) + 1 for ids in encoded]
    conversations = [p + c for p, c in zip(subset["prompt"], subset["completion"])]
    encoded = tokenizer.apply_chat_template(conversations, tokenize=True, return_dict=True)["input_ids"]
    return [len(ids) for ids in encoded]


def split_train_eval(examples, settings: DataSettings, seed: int):
    """(train, eval or None): a seeded hold-out of eval_fraction, at least one row, capped at max_eval_examples."""
    if settings.eval_fraction <= 0 or len(examples) < 10:
        return examples, None
    eval_size = max(1, min(settings.max_eval_examples, int(len(examples) * settings.eval_fraction)))
    parts = examples.train_test_split(test_size=eval_size, seed=seed, shuffle=True)
    return parts["train"], parts["test"]
