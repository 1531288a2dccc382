"""core.hub against the loopback fake Hub (tests/hub_server.py): the real huggingface_hub client runs."""

from __future__ import annotations

import json
import struct

import pytest

from core.errors import HubError, UserError
from core.hub import model_summary, push_folder, search_models, whoami


def safetensors_bytes(shapes: dict[str, list[int]], dtype: str = "F32") -> bytes:
    """A valid safetensors file of zeros with these tensor shapes."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        count = 1
        for dimension in shape:
            count *= dimension
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + 4 * count]}
        offset += 4 * count
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + bytes(offset)


LLAMA_CONFIG = json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8})
CARD = "---\nlicense: apache-2.0\npipeline_tag: text-generation\n---\n# A tiny model\n"


@pytest.fixture
def alice(fake_hub) -> str:
    return fake_hub.add_token("alice")


@pytest.fixture
def public_model(fake_hub) -> str:
    fake_hub.add_model("tiny-org/tiny-llama", {
        "config.json": LLAMA_CONFIG,
        "model.safetensors": safetensors_bytes({"embed": [16, 8], "head": [8]}),
        "README.md": CARD,
        "tokenizer.json": "{}",
    }, downloads=50)
    return "tiny-org/tiny-llama"


@pytest.fixture
def gated_model(fake_hub) -> str:
    fake_hub.add_model("big-lab/gated-llama", {
        "config.json": LLAMA_CONFIG,
        "model-00001-of-00002.safetensors": safetensors_bytes({"a": [4, 4]}),
        "model-00002-of-00002.safetensors": safetensors_bytes({"b": [4]}),
        "README.md": "---\nlicense: other\n---\nAsk for access.\n",
    }, gated="manual", downloads=900)
    return "big-lab/gated-llama"


# --- whoami -------------------------------------------------------------------------------


def test_whoami_names_the_account_of_a_valid_token(fake_hub, alice):
    assert whoami(alice) == "alice"
    assert any(request["path"] == "/api/whoami-v2" and request["user"] == "alice" for request in fake_hub.requests)


def test_whoami_refuses_an_unknown_token_without_repeating_it(fake_hub):
    token = "hf_NotARealTokenButLooksLikeOne1234"
    with pytest.raises(HubError) as refused:
        whoami(token)
    message = str(refused.value)
    assert message == ("The token was refused by the Hub (invalid or expired); "
                       "create a new one at https://huggingface.co/settings/tokens.")
    assert token not in message and token not in repr(refused.value)
    assert refused.value.__cause__ is None and refused.value.__suppress_context__


def test_whoami_says_the_hub_is_unreachable_and_local_work_still_goes(fake_hub, alice):
    fake_hub.stop()  # nothing listens on that port any more
    with pytest.raises(HubError, match="Can't reach the Hugging Face Hub.*local models and the demo still work"):
        whoami(alice)


def test_hub_calls_in_offline_mode_say_how_to_leave_it(fake_hub, public_model, alice, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for call in (lambda: whoami(alice), lambda: model_summary(public_model, alice)):
        with pytest.raises(HubError, match="HF_HUB_OFFLINE is set.*local models and the demo still work"):
            call()


def test_model_summary_says_the_hub_is_unreachable(fake_hub, public_model):
    fake_hub.stop()
    with pytest.raises(HubError, match="Can't reach the Hugging Face Hub"):
        model_summary(public_model, None)


def test_whoami_with_an_empty_token_asks_for_one(fake_hub):
    with pytest.raises(HubError, match="no token"):
        whoami("   ")


# --- model_summary ------------------------------------------------------------------------


def test_model_summary_of_a_public_model(fake_hub, public_model):
    summary = model_summary(public_model, token=None)
    assert summary.id == public_model
    assert summary.architecture == "LlamaForCausalLM"
    assert summary.model_type == "llama"
    assert summary.parameters == 16 * 8 + 8
    assert summary.license == "apache-2.0"
    assert summary.gated is False and summary.can_access is True and summary.access_url is None
    assert summary.size_bytes == len(fake_hub.repo_files(public_model)["model.safetensors"])
    assert summary.pipeline_tag == "text-generation"
    assert summary.sha == fake_hub.repos[public_model].head.oid


def test_model_summary_of_a_gated_model_without_access(fake_hub, gated_model, alice):
    for token in (alice, None):  # logged in without access, and anonymous
        summary = model_summary(gated_model, token)
        assert summary.gated is True
        assert summary.can_access is False
        assert summary.access_url == f"{fake_hub.url}/{gated_model}"
    # Sharded weights are added up; the facts are there before access is granted.
    files = fake_hub.repo_files(gated_model)
    assert summary.size_bytes == sum(len(data) for name, data in files.items() if name.endswith(".safetensors"))
    assert summary.parameters == 16 + 4
    assert summary.license == "other"


def test_model_summary_of_a_gated_model_once_access_is_granted(fake_hub, gated_model, alice):
    fake_hub.grant_access(gated_model, "alice")
    summary = model_summary(gated_model, alice)
    assert summary.gated is True and summary.can_access is True


def test_model_summary_of_an_unknown_id(fake_hub, alice):
    with pytest.raises(HubError) as missing:
        model_summary("tiny-org/no-such-model", alice)
    assert str(missing.value) == ("No model 'tiny-org/no-such-model' on the Hub; check the spelling (org/name) "
                                  "or give a local folder.")


def test_model_summary_anonymous_unknown_id_suggests_logging_in_for_private_models(fake_hub):
    with pytest.raises(HubError, match="No model 'someone/private-thing'.*log in first"):
        model_summary("someone/private-thing", None)


def test_model_summary_of_a_private_model_needs_its_owner(fake_hub, alice):
    fake_hub.add_model("alice/secret", {"config.json": LLAMA_CONFIG}, private=True)
    bob = fake_hub.add_token("bob")
    assert model_summary("alice/secret", alice).private is True
    with pytest.raises(HubError, match="No model 'alice/secret'"):
        model_summary("alice/secret", bob)


def test_model_summary_with_an_invalid_token_says_so(fake_hub, public_model):
    with pytest.raises(HubError, match="token was refused"):
        model_summary(public_model, "hf_expired")


def test_model_summary_rejects_an_id_that_is_not_one(fake_hub):
    with pytest.raises(HubError, match="not a Hub model id"):
        model_summary("a/b/c//d", None)


def test_model_summary_of_a_real_tiny_model_matches_its_weights(fake_hub, tiny_model):
    """A model saved by transformers: the Hub-side facts agree with the model itself."""
    import torch
    from safetensors.torch import load_file

    folder = tiny_model("llama")
    fake_hub.add_model("tiny-org/saved-llama", folder)
    summary = model_summary("tiny-org/saved-llama", None)
    tensors = load_file(str(folder / "model.safetensors"))
    assert summary.architecture == "LlamaForCausalLM"
    assert summary.parameters == sum(tensor.numel() for tensor in tensors.values())
    assert summary.size_bytes == (folder / "model.safetensors").stat().st_size
    assert all(tensor.dtype in (torch.float32, torch.bfloat16, torch.float16) for tensor in tensors.values())


def test_transformers_downloads_a_model_from_the_fake_hub(fake_hub, tiny_model, alice):
    """The fixture points all of huggingface_hub at the fake Hub, so engine code loading by id works."""
    from transformers import AutoConfig

    fake_hub.add_model("tiny-org/saved-llama-2", tiny_model("llama"))
    config = AutoConfig.from_pretrained("tiny-org/saved-llama-2", token=alice)
    assert config.model_type == "llama"
    assert any(request["path"].startswith("/tiny-org/saved-llama-2/resolve/") and request["path"].endswith("/config.json")
               and request["method"] == "GET" for request in fake_hub.requests)


# --- search -------------------------------------------------------------------------------


def test_search_models_finds_matches_most_downloaded_first(fake_hub, public_model, gated_model):
    fake_hub.add_model("other/unrelated-bert", {"config.json": "{}"}, downloads=10_000)
    hits = search_models("llama", limit=10)
    assert [hit.id for hit in hits] == [gated_model, public_model]
    assert hits[0].gated is True and hits[1].gated is False
    assert hits[0].downloads == 900
    assert [hit.id for hit in search_models("llama", limit=1)] == [gated_model]
    assert search_models("no-such-thing") == []


# --- push ---------------------------------------------------------------------------------


@pytest.fixture
def adapter_folder(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(safetensors_bytes({"lora_A": [4, 8], "lora_B": [8, 4]}))
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "base_model_name_or_path": "tiny-org/tiny-llama", "r": 4, "task_type": "CAUSAL_LM"}))
    (folder / "README.md").write_text("---\nlicense: apache-2.0\nbase_model: tiny-org/tiny-llama\nlibrary_name: peft\n"
                                      "---\n# My adapter\nTrained with lora-wizard.\n")
    return folder


def test_push_folder_round_trip(fake_hub, alice, adapter_folder):
    url = push_folder(adapter_folder, "alice/my-adapter", private=True, token=alice, commit_message="First adapter")
    assert url == f"{fake_hub.url}/alice/my-adapter"
    stored = fake_hub.repo_files("alice/my-adapter")
    for path in adapter_folder.iterdir():
        assert stored[path.name] == path.read_bytes()
    repo = fake_hub.repos["alice/my-adapter"]
    assert repo.private is True
    assert repo.head.title == "First adapter"
    # The weights went through the LFS upload, the card and config inline in the commit.
    assert repo.head.files["adapter_model.safetensors"].lfs is True
    assert repo.head.files["README.md"].lfs is False
    assert any(request["method"] == "PUT" and request["path"].startswith("/__lfs/") for request in fake_hub.requests)
    # The pushed card's metadata is what the Hub then shows.
    summary = model_summary("alice/my-adapter", alice)
    assert summary.license == "apache-2.0" and summary.parameters == 64


def test_push_folder_again_updates_the_same_repo(fake_hub, alice, adapter_folder):
    push_folder(adapter_folder, "alice/my-adapter", token=alice)
    (adapter_folder / "README.md").write_text("---\nlicense: mit\n---\n# Second version\n")
    push_folder(adapter_folder, "alice/my-adapter", token=alice, commit_message="Second")
    repo = fake_hub.repos["alice/my-adapter"]
    assert [commit.title for commit in repo.commits][-1] == "Second"
    assert fake_hub.repo_files("alice/my-adapter")["README.md"].startswith(b"---\nlicense: mit")


def test_push_folder_without_owner_goes_under_the_tokens_account(fake_hub, alice, adapter_folder):
    url = push_folder(adapter_folder, "bare-name", token=alice)
    assert url.endswith("/alice/bare-name")
    assert "adapter_config.json" in fake_hub.repo_files("alice/bare-name")


def test_push_folder_public(fake_hub, alice, adapter_folder):
    push_folder(adapter_folder, "alice/open-adapter", private=False, token=alice)
    assert fake_hub.repos["alice/open-adapter"].private is False


def test_push_folder_with_a_read_only_token_explains_write_access(fake_hub, adapter_folder):
    reader = fake_hub.add_token("alice", role="read")
    with pytest.raises(HubError, match="write access") as refused:
        push_folder(adapter_folder, "alice/my-adapter", token=reader)
    assert reader not in str(refused.value)


def test_push_folder_to_someone_elses_namespace_is_refused(fake_hub, alice, adapter_folder):
    with pytest.raises(HubError, match="refused to let this token write to 'big-lab/stolen'"):
        push_folder(adapter_folder, "big-lab/stolen", token=alice)


def test_push_folder_with_an_invalid_token(fake_hub, adapter_folder):
    with pytest.raises(HubError, match="token was refused"):
        push_folder(adapter_folder, "alice/my-adapter", token="hf_revoked")


def test_push_folder_needs_a_folder(fake_hub, alice, tmp_path):
    with pytest.raises(UserError, match="no folder"):
        push_folder(tmp_path / "missing", "alice/x", token=alice)


def test_push_folder_needs_a_token(fake_hub, adapter_folder, no_keyring, session_token_cleared):
    with pytest.raises(HubError, match="needs a Hugging Face token with write access"):
        push_folder(adapter_folder, "alice/x", token=None)
