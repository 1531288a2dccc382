"""The Hugging Face token and the few Hub calls lora-wizard makes.

The token lives in the OS keyring under a fixed entry, service `lora-wizard`, user
`huggingface-token`, so it can be inspected or removed with the OS's own tools
(`secret-tool search service lora-wizard` on Linux). lora-wizard never writes a token to a
plaintext file: on a machine with no keyring (a bare SSH server) the token is kept in this
process's memory only, or comes from HF_TOKEN.

Where a token comes from, in order:
  1. "env":     HF_TOKEN (or the older HUGGING_FACE_HUB_TOKEN) in the environment; it always wins,
                as it does for huggingface_hub itself, so scripts and job queues stay in control.
  2. "session": a token given in this process with `store_token(token, session_only=True)`; it is
                the user's latest explicit choice, so it wins over an older keyring entry.
  3. "keyring": the OS keyring entry above.
  4. "hf-cli":  the token file `hf auth login` writes (read only), so users of the Hugging Face
                CLI are not asked again.

Every keyring call runs with a deadline (a locked keyring over SSH can wait forever on an
unlock prompt nobody sees) and raises KeyringTimeout instead of hanging the wizard.

Nothing here imports textual; keyring and huggingface_hub are imported inside the functions
that use them, so `import core.hub` stays cheap for the wizard's start.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from core.errors import HubError, UserError

KEYRING_SERVICE = "lora-wizard"
KEYRING_USERNAME = "huggingface-token"

# Seconds a keyring call may take before KeyringTimeout; LORA_WIZARD_KEYRING_TIMEOUT overrides it
# (slow machines, and tests that must not wait long).
KEYRING_TIMEOUT_SECONDS = 5.0
# Seconds a small Hub request (whoami, model info, search) may take before HubError.
HUB_TIMEOUT_SECONDS = 30.0

TOKENS_PAGE = "https://huggingface.co/settings/tokens"
ENABLE_KEYRING_HINT = (
    "install one (`sudo apt install gnome-keyring`) and start lora-wizard with "
    "`dbus-run-session -- sh -c 'echo -n PASSWORD | gnome-keyring-daemon --unlock; lora-wizard'`, "
    "or set HF_TOKEN in the environment, or keep the token for this session only"
)

TOKEN_SOURCES = ("env", "session", "keyring", "hf-cli")


class KeyringTimeout(UserError):
    """The OS keyring did not answer in time (typically locked, waiting on an unseen prompt)."""


class KeyringUnavailable(UserError):
    """There is no usable OS keyring, or it refused the request."""


_session_token: str | None = None
# The keyring call that timed out, if it is still waiting: later calls fail fast instead of
# piling up threads behind the same unanswered prompt.
_stuck_keyring_call: threading.Thread | None = None
_keyring_lock = threading.Lock()


# --- the token ------------------------------------------------------------------------------


def get_token() -> tuple[str | None, str | None]:
    """Returns (token, source), source one of TOKEN_SOURCES, or (None, None) when there is none.

    Raises KeyringTimeout when the keyring does not answer; other keyring failures (no backend,
    a locked keyring that refuses) count as "no token in the keyring".
    """
    token = _clean(os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"))
    if token:
        return token, "env"
    if _session_token:
        return _session_token, "session"
    available, _ = keyring_available()
    if available:
        try:
            token = _clean(_keyring_call("read the token from", _keyring_get))
        except KeyringUnavailable:
            token = None
        if token:
            return token, "keyring"
    token = _read_hf_cli_token()
    if token:
        return token, "hf-cli"
    return None, None


def store_token(token: str, session_only: bool = False) -> str:
    """Keeps the token in the OS keyring, or with session_only=True in this process's memory only.

    Returns where it went: "keyring" or "session". Raises KeyringUnavailable (with how to get a
    keyring) when there is no usable keyring; it never falls back to a plaintext file.
    """
    global _session_token
    token = _clean(token)
    if not token:
        raise UserError("The token is empty; paste the token from " + TOKENS_PAGE + ".")
    if session_only:
        _session_token = token
        return "session"
    available, reason = keyring_available()
    if not available:
        raise KeyringUnavailable(reason)
    _keyring_call("store the token in", _keyring_set, token)
    # A stored token replaces any session token, so get_token() returns the one just stored.
    _session_token = None
    return "keyring"


def delete_token() -> bool:
    """Forgets the session token and removes the keyring entry; True if there was something to remove.

    HF_TOKEN and the `hf auth login` file are not ours to remove; `login --logout` says so.
    """
    global _session_token
    removed = _session_token is not None
    _session_token = None
    available, _ = keyring_available()
    if available:
        removed = _keyring_call("remove the token from", _keyring_delete) or removed
    return removed


def keyring_available() -> tuple[bool, str]:
    """(True, which keyring) when a keyring that keeps secrets safely is there, else (False, what to do).

    Detects the "fail" and "null" backends and a chain of nothing (what a bare SSH server has),
    and refuses keyrings.alt's file backends (plaintext, or a password prompt on the terminal).
    """
    return _keyring_call("look for", _keyring_status)


def _keyring_status() -> tuple[bool, str]:
    import keyring

    backend = keyring.get_keyring()
    problem = _backend_problem(backend)
    if problem:
        return False, f"No usable OS keyring here ({problem}); to store the token, {ENABLE_KEYRING_HINT}."
    return True, f"OS keyring: {_backend_name(_effective_backend(backend))}"


def _backend_problem(backend: Any) -> str | None:
    name = _backend_name(backend)
    module = type(backend).__module__
    if name in ("fail.Keyring", "null.Keyring"):
        return f"the keyring library found no backend: {name}"
    if name == "chainer.ChainerBackend":
        members = list(getattr(backend, "backends", []))
        if not members:
            return "the keyring library found no backend"
        return _backend_problem(members[0])
    if module.startswith("keyrings.alt"):
        return f"{name} keeps secrets in a file lora-wizard does not use"
    return None


def _effective_backend(backend: Any) -> Any:
    members = list(getattr(backend, "backends", []) or [])
    return members[0] if _backend_name(backend) == "chainer.ChainerBackend" and members else backend


def _backend_name(backend: Any) -> str:
    return f"{type(backend).__module__.rsplit('.', 1)[-1]}.{type(backend).__name__}"


def _keyring_get() -> str | None:
    import keyring

    return keyring.get_password(KEYRING_SERVICE, KEYRING_USERNAME)


def _keyring_set(token: str) -> None:
    import keyring

    keyring.set_password(KEYRING_SERVICE, KEYRING_USERNAME, token)


def _keyring_delete() -> bool:
    import keyring
    from keyring.errors import PasswordDeleteError

    try:
        keyring.delete_password(KEYRING_SERVICE, KEYRING_USERNAME)
    except PasswordDeleteError:
        return False
    return True


def _keyring_call(action: str, function: Callable[..., Any], *args: Any) -> Any:
    """Runs one keyring call in a daemon thread and gives up after the keyring timeout.

    The thread cannot be stopped, but as a daemon it never keeps the process alive, and while it
    waits later calls fail at once rather than queue behind it.
    """
    global _stuck_keyring_call
    timeout = _keyring_timeout()
    waiting = (
        f"The OS keyring did not answer within {timeout:g} s when asked to {action} it (it may be locked and "
        "waiting on an unlock prompt you can't see); unlock it (e.g. `echo -n PASSWORD | gnome-keyring-daemon "
        "--unlock`), or set HF_TOKEN in the environment, or keep the token for this session only."
    )
    with _keyring_lock:
        if _stuck_keyring_call is not None and _stuck_keyring_call.is_alive():
            raise KeyringTimeout(waiting)
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = function(*args)
        except BaseException as error:  # handed to the caller's thread below
            outcome["error"] = error

    thread = threading.Thread(target=call, name=f"keyring: {action}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        with _keyring_lock:
            _stuck_keyring_call = thread
        raise KeyringTimeout(waiting)
    if "error" in outcome:
        error = outcome["error"]
        from keyring.errors import KeyringError

        if isinstance(error, KeyringError):
            # The backend's own message names the keyring, never the secret; `from None` keeps the
            # arguments (the token, for a store) out of any traceback.
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise KeyringUnavailable(
                f"The OS keyring refused to {action} it ({detail}); unlock it, or set HF_TOKEN in the "
                "environment, or keep the token for this session only."
            ) from None
        raise error
    return outcome.get("value")


def _keyring_timeout() -> float:
    try:
        return float(os.environ.get("LORA_WIZARD_KEYRING_TIMEOUT", KEYRING_TIMEOUT_SECONDS))
    except ValueError:
        return KEYRING_TIMEOUT_SECONDS


def _read_hf_cli_token() -> str | None:
    from huggingface_hub import constants  # small module; the rest of huggingface_hub stays unloaded

    try:
        return _clean(Path(constants.HF_TOKEN_PATH).read_text())
    except (OSError, UnicodeDecodeError):
        return None


def _clean(token: str | None) -> str | None:
    if token is None:
        return None
    token = token.strip()
    return token or None


# --- the Hub ------------------------------------------------------------------------------


@dataclass
class ModelSummary:
    """What the wizard shows about a Hub model before anything is downloaded."""

    id: str
    architecture: str | None  # e.g. "LlamaForCausalLM", from the repo's config.json
    parameters: int | None  # from the safetensors headers the Hub indexes; None when unknown
    license: str | None
    gated: bool
    can_access: bool  # False: gated (or private) and this token has no access
    access_url: str | None  # where to ask for access, for gated models
    size_bytes: int | None  # bytes of weights a download fetches (safetensors preferred)
    pipeline_tag: str | None = None
    model_type: str | None = None  # e.g. "llama"
    sha: str | None = None  # the commit the summary describes
    private: bool = False


@dataclass
class ModelHit:
    """One search result."""

    id: str
    downloads: int | None
    likes: int | None
    pipeline_tag: str | None
    gated: bool | None  # None: the search did not say


def whoami(token: str) -> str:
    """The Hub account name the token belongs to; HubError if it is refused or the Hub is out of reach."""
    token = _clean(token)
    if not token:
        raise HubError("There is no token to check; paste the token from " + TOKENS_PAGE + ".")
    try:
        info = _with_deadline(lambda: _api().whoami(token=token), "check the token")
    except HubError:
        raise
    except Exception as error:
        raise _hub_error(error, token) from None
    return str(info.get("name") or "")


def model_summary(model_id: str, token: str | None = None, revision: str | None = None) -> ModelSummary:
    """Facts about a Hub model, including whether this token can download it (gated models).

    token=None means "no token": the request is anonymous, as the wizard's state says.
    """
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError, RevisionNotFoundError

    auth: str | bool = _clean(token) or False
    api = _api()
    try:
        info = api.model_info(model_id, revision=revision, files_metadata=True, token=auth, timeout=HUB_TIMEOUT_SECONDS)
    except HFValidationError:
        raise HubError(f"'{model_id}' is not a Hub model id; write it as org/name, or give a local folder.") from None
    except RepositoryNotFoundError:
        raise HubError(_no_model_message(model_id, auth)) from None
    except RevisionNotFoundError:
        raise HubError(f"Model '{model_id}' has no revision '{revision}'; check the branch, tag or commit.") from None
    except Exception as error:
        raise _hub_error(error, auth) from None

    gated = bool(info.gated)
    can_access = True
    if gated:
        probe = _access_probe_file(info)
        if probe is not None:
            can_access = _can_download(model_id, probe, info.sha or revision, auth)
    config = info.config or {}
    architectures = config.get("architectures") or []
    return ModelSummary(
        id=info.id,
        architecture=architectures[0] if architectures else None,
        parameters=info.safetensors.total if info.safetensors else None,
        license=_license_of(info),
        gated=gated,
        can_access=can_access,
        access_url=f"{api.endpoint}/{info.id}" if gated else None,
        size_bytes=_weights_size(info.siblings or []),
        pipeline_tag=info.pipeline_tag,
        model_type=config.get("model_type"),
        sha=info.sha,
        private=bool(info.private),
    )


def search_models(query: str, limit: int = 20, token: str | None = None) -> list[ModelHit]:
    """Hub models matching `query`, most downloaded first."""
    auth: str | bool = _clean(token) or False

    def search() -> list[Any]:
        return list(_api().list_models(search=query.strip(), limit=limit, sort="downloads", token=auth,
                                       expand=["downloads", "likes", "pipeline_tag", "gated"]))

    try:
        found = _with_deadline(search, "search models")
    except HubError:
        raise
    except Exception as error:
        raise _hub_error(error, auth) from None
    return [
        ModelHit(
            id=model.id,
            downloads=model.downloads,
            likes=model.likes,
            pipeline_tag=model.pipeline_tag,
            gated=None if model.gated is None else bool(model.gated),
        )
        for model in found
    ]


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = True,
    token: str | None = None,
    commit_message: str = "Upload LoRA adapter with lora-wizard",
) -> str:
    """Creates the model repo if needed and uploads every file of `folder` in one commit; returns the repo URL.

    A repo_id without an owner ("my-adapter") goes under the token's account.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"There is no folder {folder} to push; train or merge first.")
    token = _clean(token) or get_token()[0]
    if not token:
        raise HubError("Pushing needs a Hugging Face token with write access; run `lora-wizard login` first.")
    repo_id = repo_id.strip().strip("/")
    if "/" not in repo_id:
        repo_id = f"{whoami(token)}/{repo_id}"
    from huggingface_hub.errors import HFValidationError

    api = _api()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, token=token, repo_type="model")
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                          commit_message=commit_message, token=token)
    except HFValidationError:
        raise HubError(f"'{repo_id}' is not a valid repo name; use owner/name with letters, digits, '-', '_' or '.'.") from None
    except Exception as error:
        raise _hub_error(error, token, repo_id=repo_id, writing=True) from None
    return str(url)


# --- `lora-wizard login` -----------------------------------------------------------------


def login_command(args: Any) -> int:
    """`lora-wizard login [--token T] [--logout]`: check a token with the Hub and keep it in the OS keyring."""
    if getattr(args, "logout", False):
        return _logout()
    available, reason = keyring_available()
    if not available:
        raise KeyringUnavailable(
            reason.rstrip(".") + "; lora-wizard does not write tokens to plaintext files."
        )
    token = _clean(getattr(args, "token", None)) or _clean(os.environ.get("HF_TOKEN")) or _read_token_from_user()
    if not token:
        raise UserError("No token given; create one at " + TOKENS_PAGE + " and paste it when asked.")
    name = whoami(token)
    store_token(token)
    print(f"Logged in as {name}; token stored in the OS keyring (service {KEYRING_SERVICE}).")
    return 0


def _logout() -> int:
    removed = delete_token()
    print("Removed the token from the OS keyring." if removed else "No token was stored in the OS keyring.")
    token, source = get_token()
    if source == "env":
        print("HF_TOKEN is still set in this shell's environment; unset it to log out fully.")
    elif source == "hf-cli":
        print("The Hugging Face CLI's token is still there; run `hf auth logout` to remove it.")
    return 0


def _read_token_from_user() -> str | None:
    if sys.stdin is None:
        return None
    if sys.stdin.isatty():
        import getpass

        return _clean(getpass.getpass(f"Hugging Face token (from {TOKENS_PAGE}; input hidden): "))
    # Piped in (`echo "$TOKEN" | lora-wizard login`): read it without echoing anything.
    return _clean(sys.stdin.readline())


# --- helpers for Hub calls -----------------------------------------------------------------


def _api() -> Any:
    # A fresh client per call: HfApi reads huggingface_hub.constants.ENDPOINT when created, and
    # huggingface_hub's module-level client keeps whatever endpoint it saw at import.
    from huggingface_hub import HfApi

    from core import __version__

    return HfApi(library_name="lora-wizard", library_version=__version__)


def _with_deadline(function: Callable[[], Any], action: str) -> Any:
    """huggingface_hub's shared HTTP client has no timeout; a black-holed network would hang the wizard."""
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=call, name=f"hub: {action}", daemon=True)
    thread.start()
    thread.join(HUB_TIMEOUT_SECONDS)
    if thread.is_alive():
        raise HubError(
            f"The Hugging Face Hub did not answer within {HUB_TIMEOUT_SECONDS:g} s when asked to {action}; "
            "check the connection or proxy (local models and the demo still work)."
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _hub_error(error: BaseException, token: str | bool | None, repo_id: str | None = None,
               writing: bool = False) -> HubError:
    """One readable line for a failed Hub call. Never includes the token."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    if isinstance(error, OfflineModeIsEnabled):
        return HubError("HF_HUB_OFFLINE is set, so the Hub is not contacted; unset it to use the Hub "
                        "(local models and the demo still work).")
    if _is_network_error(error):
        return HubError(f"Can't reach the Hugging Face Hub at {_endpoint()} ({type(error).__name__}); check the "
                        "connection or proxy (local models and the demo still work).")
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        status = error.response.status_code
        if status == 401 and not isinstance(error, RepositoryNotFoundError):
            return HubError(f"The token was refused by the Hub (invalid or expired); create a new one at {TOKENS_PAGE}.")
        if writing and (status in (401, 403) or isinstance(error, RepositoryNotFoundError)):
            return HubError(f"The Hub refused to let this token write to '{repo_id}'; use a token with write access "
                            f"(create one at {TOKENS_PAGE}) and a repo under your account or an organization you "
                            "can write to.")
        if status == 403:
            return HubError(f"The Hub refused this request (403: your token lacks the permission); check its scopes at "
                            f"{TOKENS_PAGE}.")
        if status == 429:
            return HubError("The Hub is rate-limiting requests from here (429); wait a minute and try again.")
        if status >= 500:
            return HubError(f"The Hub had a server error ({status}); try again in a minute.")
        detail = _first_line(getattr(error, "server_message", None) or str(error))
        return HubError(_without_token(f"The Hub answered {status}: {detail}", token))
    if isinstance(error, HubError):
        return error
    detail = _first_line(str(error)) or type(error).__name__
    return HubError(_without_token(f"The Hub request failed ({type(error).__name__}: {detail}).", token))


def _is_network_error(error: BaseException) -> bool:
    transport_errors: list[type] = [ConnectionError, TimeoutError]
    for module_name in ("httpx2", "httpx"):  # huggingface_hub 2.x uses httpx2, 1.x httpx
        module = sys.modules.get(module_name)
        if module is not None:
            transport_errors.append(module.TransportError)
    return isinstance(error, tuple(transport_errors))


def _no_model_message(model_id: str, auth: str | bool) -> str:
    message = f"No model '{model_id}' on the Hub; check the spelling (org/name) or give a local folder"
    if not auth:
        message += " (if it is private, log in first with `lora-wizard login`)"
    return message + "."


def _access_probe_file(info: Any) -> str | None:
    """A file of a gated repo that needs access to read (the README and .gitattributes never do)."""
    names = [sibling.rfilename for sibling in info.siblings or []]
    if "config.json" in names:
        return "config.json"
    gated_names = [name for name in names if name not in ("README.md", ".gitattributes")]
    return gated_names[0] if gated_names else None


def _can_download(model_id: str, filename: str, revision: str | None, auth: str | bool) -> bool:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    url = hf_hub_url(model_id, filename, revision=revision, endpoint=_endpoint())
    try:
        get_hf_file_metadata(url, token=auth, timeout=HUB_TIMEOUT_SECONDS)
    except (GatedRepoError, RepositoryNotFoundError):
        return False
    except Exception as error:
        raise _hub_error(error, auth) from None
    return True


def _license_of(info: Any) -> str | None:
    card = info.card_data
    license_name = getattr(card, "license", None) if card is not None else None
    if isinstance(license_name, list):
        license_name = ", ".join(str(item) for item in license_name)
    if license_name:
        return str(license_name)
    for tag in info.tags or []:
        if tag.startswith("license:"):
            return tag.split(":", 1)[1]
    return None


def _weights_size(siblings: list[Any]) -> int | None:
    """Bytes of the weight files transformers would fetch: top-level safetensors, else pickle weights."""
    def sizes(suffixes: tuple[str, ...]) -> list[int | None]:
        return [sibling.size for sibling in siblings
                if "/" not in sibling.rfilename and sibling.rfilename.endswith(suffixes)]

    for suffixes in ((".safetensors",), (".bin", ".pt", ".pth")):
        found = sizes(suffixes)
        if found:
            return None if any(size is None for size in found) else sum(found)
    return None


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0].strip() if stripped else ""


def _without_token(text: str, token: str | bool | None) -> str:
    if isinstance(token, str) and token:
        text = text.replace(token, "hf_***")
    return text
