"""Shared fixtures. Sections are owned by the engineers named in their headers; add yours at the end."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from tests.helpers import TOY_WORDS, toy_config, toy_pairs, write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# A real Secret Service on a loaded 2-core CI machine can take seconds to answer its first call; tests of
# the timeout itself set their own short one. (The product's default is 5 s: hub.KEYRING_TIMEOUT_SECONDS.)
os.environ.setdefault("LORA_WIZARD_KEYRING_TIMEOUT", "30")

# ---------------------------------------------------------------------------------------------
# Engine: tiny models of real architectures and a learnable toy task (reverse a word)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_tokenizer():
    from core.tiny import build_tokenizer

    corpus = [f"{q} {a} {' '.join(TOY_WORDS)}" for q, a in toy_pairs(300)]
    return build_tokenizer(corpus, vocab_size=400)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_tokenizer):
    """tiny_model(architecture) -> folder of a saved random model of that architecture (built once per session)."""
    from core.tiny import build_tiny_model

    built: dict[str, Path] = {}

    def make(architecture: str = "llama") -> Path:
        if architecture not in built:
            built[architecture] = build_tiny_model(architecture, tiny_tokenizer,
                                                   tmp_path_factory.mktemp(f"tiny-{architecture}"), seed=1)
        return built[architecture]

    return make


@pytest.fixture(scope="session")
def toy_alpaca(tmp_path_factory) -> Path:
    rows = [{"instruction": q, "input": "", "output": a} for q, a in toy_pairs(160, seed=1)]
    return write_jsonl(tmp_path_factory.mktemp("data") / "alpaca.jsonl", rows)


@pytest.fixture(scope="session")
def toy_messages(tmp_path_factory) -> Path:
    rows = [{"messages": [{"role": "system", "content": "You reverse words."},
                          {"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in toy_pairs(160, seed=2)]
    return write_jsonl(tmp_path_factory.mktemp("data") / "messages.jsonl", rows)


@pytest.fixture
def make_config():
    return toy_config


# ---------------------------------------------------------------------------------------------
# Hub + token (owner: hub/keyring): a loopback fake Hub the real huggingface_hub client talks to
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A started tests.hub_server.FakeHub that huggingface_hub in this process (and in subprocesses,
    through the environment) talks to, with a fresh HF_HOME and no token in the environment.

    Register state on it: `token = fake_hub.add_token("alice")`, `fake_hub.add_model("org/name",
    folder_or_dict, gated=True)`, `fake_hub.grant_access("org/name", "alice")`; read pushes back
    with `fake_hub.repo_files("alice/repo")` and requests with `fake_hub.requests`.
    """
    import huggingface_hub
    from huggingface_hub import constants

    from tests.hub_server import FakeHub

    hub = FakeHub().start()
    hf_home = tmp_path / "hf-home"
    settings = {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        # Uploads take the LFS "basic" transfer the fake Hub speaks, not Xet.
        "HF_HUB_DISABLE_XET": "1",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # huggingface_hub reads the environment once, at import, into these constants; the client
    # code reads the constants at call time, so setting them keeps every client function real.
    constant_values = {
        "ENDPOINT": hub.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HUGGINGFACE_HUB_CACHE": str(hf_home / "hub"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "HF_HUB_DISABLE_XET": True,
    }
    for name, value in constant_values.items():
        monkeypatch.setattr(constants, name, value)
    huggingface_hub.close_session()  # no pooled connection to a previous test's server
    try:
        yield hub
    finally:
        huggingface_hub.close_session()
        hub.stop()


@pytest.fixture
def session_token_cleared():
    """Forgets core.hub's in-memory session token before and after a test."""
    import core.hub

    core.hub._session_token = None
    yield
    core.hub._session_token = None


@pytest.fixture
def no_keyring():
    """The keyring library's "fail" backend for the test, as on a bare SSH server (no Secret Service)."""
    import keyring
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    yield
    keyring.set_keyring(previous)
