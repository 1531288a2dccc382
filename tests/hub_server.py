"""A fake Hugging Face Hub on 127.0.0.1, so tests run the real huggingface_hub client code.

It speaks the few endpoints lora-wizard (and transformers' downloads) use, answering the way
huggingface_hub 2.x expects, down to the headers its error parsing reads (X-Error-Code,
X-Error-Message) and those hf_hub_download needs (X-Repo-Commit, ETag, Content-Length):

  GET  /api/whoami-v2                              Bearer token check
  GET  /api/models?search=&limit=&sort=&expand=    search
  GET  /api/models/{id}[/revision/{rev}]           model info (?blobs=true: sizes and LFS info)
  GET  /api/models/{id}/tree/{rev}[/{path}]        file listing (snapshot_download)
  HEAD/GET /{id}/resolve/{rev}/{path}              files; gated repos answer 401/403 "GatedRepo"
  POST /api/repos/create                           create a repo (409 when it exists)
  POST /api/validate-yaml                          model card metadata check (accepts all)
  POST /api/models/{id}/preupload/{rev}            upload mode per file: "regular" or "lfs"
  POST /{id}.git/info/lfs/objects/batch            LFS "basic" transfer: PUT + verify hrefs
  PUT  /__lfs/{oid}, POST /__lfs/{oid}/verify      the LFS object store
  POST /api/models/{id}/commit/{rev}               NDJSON commit: inline base64 and LFS files

LFS files go through the basic LFS transfer, not Xet: the `fake_hub` fixture sets
huggingface_hub.constants.HF_HUB_DISABLE_XET (the documented HF_HUB_DISABLE_XET switch).
Everything is kept in memory; `FakeHub.repo_files()` returns what a push stored.
Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import struct
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# Files the real Hub's default .gitattributes sends to LFS; anything over 10 MiB or binary goes there too.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".parquet",
                ".arrow", ".model", ".npy", ".npz", ".pkl", ".zip", ".tar", ".gz")
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES).encode()
# Files of a gated repo anyone may read, as on the Hub.
UNGATED_FILES = ("README.md", ".gitattributes")
SAFETENSORS_DTYPES = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2",
                      "U16", "U32", "U64", "F8_E8M0", "F4"}


@dataclass
class TokenInfo:
    value: str
    user: str
    orgs: tuple[str, ...] = ()
    role: str = "write"  # "read" or "write"


@dataclass
class StoredFile:
    content: bytes
    lfs: bool

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def git_oid(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.content) + self.content).hexdigest()

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def blob_id(self) -> str:
        """The git oid the Hub reports: of the LFS pointer for LFS files, of the content otherwise."""
        if self.lfs:
            return hashlib.sha1(b"blob %d\0" % len(self.pointer) + self.pointer).hexdigest()
        return self.git_oid

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class Commit:
    oid: str
    title: str
    date: str
    files: dict[str, StoredFile]


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    gated: Any = False  # False, "auto" or "manual", as the Hub reports it
    access: set[str] = field(default_factory=set)  # users granted access to a gated repo
    commits: list[Commit] = field(default_factory=list)
    downloads: int = 0
    likes: int = 0
    pipeline_tag: str | None = "text-generation"
    license: str | None = None  # overrides the model card's
    created: str = ""

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0] if "/" in self.repo_id else self.repo_id

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def commit(self, revision: str) -> Commit | None:
        if revision in ("main", "refs/heads/main"):
            return self.head
        for commit in self.commits:
            if commit.oid == revision:
                return commit
        return None


class HubHTTPError(Exception):
    """Ends a request with this status, X-Error-Code / X-Error-Message headers and JSON body."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.extra = extra or {}
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


class FakeHub:
    """The Hub's state plus the loopback HTTP server that serves it.

    Register users' tokens with `add_token`, models with `add_model` (public, private or gated,
    files from a dict or a local folder), then point huggingface_hub at `url`.
    """

    def __init__(self) -> None:
        self.tokens: dict[str, TokenInfo] = {}
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeHub:
        handler = type("BoundHubHandler", (_HubHandler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start the fake Hub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- state set-up and inspection --------------------------------------------------------

    def add_token(self, user: str, token: str | None = None, orgs: tuple[str, ...] | list[str] = (),
                  role: str = "write") -> str:
        """Registers a valid token for `user` and returns it (a fresh random `hf_...` if not given)."""
        token = token or "hf_" + secrets.token_hex(17)
        with self.lock:
            self.tokens[token] = TokenInfo(token, user, tuple(orgs), role)
        return token

    def add_model(self, repo_id: str, files: dict[str, bytes | str] | str | Path | None = None, *,
                  gated: Any = False, private: bool = False, license: str | None = None,
                  pipeline_tag: str | None = "text-generation", downloads: int = 0, likes: int = 0,
                  access: tuple[str, ...] | list[str] = ()) -> str:
        """Adds a model repo whose first commit holds `files` (a dict, or every file under a folder).

        gated: False, True (means "auto") or "manual". Returns the commit oid.
        """
        contents = _collect_files(files)
        contents.setdefault(".gitattributes", GITATTRIBUTES)
        with self.lock:
            repo = Repo(repo_id, private=private, gated="auto" if gated is True else gated, access=set(access),
                        downloads=downloads, likes=likes, pipeline_tag=pipeline_tag, license=license,
                        created=_now())
            self.repos[repo_id] = repo
            return self._commit(repo, "initial commit", {path: _stored(path, data) for path, data in contents.items()})

    def grant_access(self, repo_id: str, user: str) -> None:
        with self.lock:
            self.repos[repo_id].access.add(user)

    def repo_files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a repo at a revision, e.g. to check what a push stored."""
        with self.lock:
            commit = self.repos[repo_id].commit(revision)
            assert commit is not None, f"no revision {revision} in {repo_id}"
            return {path: stored.content for path, stored in commit.files.items()}

    def _commit(self, repo: Repo, title: str, files: dict[str, StoredFile]) -> str:
        parent = repo.commits[-1].oid if repo.commits else ""
        digest = hashlib.sha1(parent.encode() + title.encode() + secrets.token_bytes(8))
        for path in sorted(files):
            digest.update(path.encode() + files[path].git_oid.encode())
        commit = Commit(digest.hexdigest(), title, _now(), files)
        repo.commits.append(commit)
        return commit.oid


def _collect_files(files: dict[str, bytes | str] | str | Path | None) -> dict[str, bytes]:
    if files is None:
        return {}
    if isinstance(files, dict):
        return {path: data.encode() if isinstance(data, str) else bytes(data) for path, data in files.items()}
    root = Path(files)
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file() and ".cache" not in path.relative_to(root).parts}


def _stored(path: str, content: bytes) -> StoredFile:
    return StoredFile(content, lfs=_goes_to_lfs(path, len(content), content[:512]))


def _goes_to_lfs(path: str, size: int, sample: bytes) -> bool:
    return path.endswith(LFS_SUFFIXES) or size >= LFS_SIZE_THRESHOLD or b"\0" in sample


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# -- what the Hub derives from a repo's files ------------------------------------------------


def _card_data(files: dict[str, StoredFile]) -> dict[str, Any]:
    """Top-level `key: value` and `key:\\n- item` pairs of README.md's YAML front matter."""
    readme = files.get("README.md")
    if readme is None:
        return {}
    text = readme.content.decode("utf-8", "replace")
    match = re.match(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", text, re.S)
    if not match:
        return {}
    data: dict[str, Any] = {}
    key = None
    for line in match.group(1).splitlines():
        if re.match(r"^[A-Za-z0-9_-]+:", line):
            key, _, value = line.partition(":")
            value = value.strip().strip("'\"")
            data[key] = value if value else []
        elif key and line.strip().startswith("- ") and isinstance(data.get(key), list):
            data[key].append(line.strip()[2:].strip().strip("'\""))
    return data


def _config_summary(files: dict[str, StoredFile]) -> dict[str, Any] | None:
    config = files.get("config.json") or files.get("adapter_config.json")
    if config is None:
        return None
    try:
        parsed = json.loads(config.content)
    except ValueError:
        return None
    summary = {key: parsed[key] for key in ("architectures", "model_type") if key in parsed}
    if "peft_type" in parsed:
        summary["peft"] = {"base_model_name_or_path": parsed.get("base_model_name_or_path"),
                           "task_type": parsed.get("task_type")}
    return summary


def _safetensors_parameters(files: dict[str, StoredFile]) -> dict[str, Any] | None:
    """Parameter counts per dtype read from the safetensors headers, as the Hub indexes them."""
    counts: dict[str, int] = {}
    found = False
    for path, stored in files.items():
        if not path.endswith(".safetensors") or stored.size < 8:
            continue
        (header_size,) = struct.unpack("<Q", stored.content[:8])
        try:
            header = json.loads(stored.content[8:8 + header_size])
        except ValueError:
            continue
        found = True
        for name, tensor in header.items():
            if name == "__metadata__" or tensor.get("dtype") not in SAFETENSORS_DTYPES:
                continue
            count = 1
            for dimension in tensor.get("shape", []):
                count *= dimension
            counts[tensor["dtype"]] = counts.get(tensor["dtype"], 0) + count
    if not found:
        return None
    return {"parameters": counts, "total": sum(counts.values())}


def _model_info(hub: FakeHub, repo: Repo, commit: Commit, blobs: bool, expand: list[str] | None = None) -> dict:
    card = _card_data(commit.files)
    license_name = repo.license or (card.get("license") if isinstance(card.get("license"), str) else None)
    if repo.license:
        card["license"] = repo.license
    config = _config_summary(commit.files)
    tags = ["transformers"] if config else []
    if any(path.endswith(".safetensors") for path in commit.files):
        tags.append("safetensors")
    if config and config.get("model_type"):
        tags.append(config["model_type"])
    if repo.pipeline_tag:
        tags.append(repo.pipeline_tag)
    if license_name:
        tags.append(f"license:{license_name}")
    siblings = []
    for path in sorted(commit.files):
        stored = commit.files[path]
        sibling: dict[str, Any] = {"rfilename": path}
        if blobs:
            sibling.update(blobId=stored.blob_id, size=stored.size)
            if stored.lfs:
                sibling["lfs"] = {"sha256": stored.sha256, "size": stored.size, "pointerSize": len(stored.pointer)}
        siblings.append(sibling)
    info = {
        "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
        "id": repo.repo_id,
        "modelId": repo.repo_id,
        "author": repo.namespace,
        "sha": commit.oid,
        "lastModified": commit.date,
        "createdAt": repo.created,
        "private": repo.private,
        "gated": repo.gated,
        "disabled": False,
        "downloads": repo.downloads,
        "likes": repo.likes,
        "library_name": "peft" if config and "peft" in config else ("transformers" if config else None),
        "tags": tags,
        "pipeline_tag": repo.pipeline_tag,
        "cardData": card or None,
        "config": config,
        "siblings": siblings,
        "spaces": [],
        "safetensors": _safetensors_parameters(commit.files),
        "usedStorage": sum(stored.size for stored in commit.files.values()),
    }
    if expand:
        names = {"pipeline_tag": "pipeline_tag", "cardData": "cardData", "safetensors": "safetensors"}
        return {"_id": info["_id"], "id": info["id"],
                **{names.get(key, key): info[names.get(key, key)] for key in expand if names.get(key, key) in info}}
    return info


# -- the HTTP side ------------------------------------------------------------------------------


class _HubHandler(BaseHTTPRequestHandler):
    hub: FakeHub  # set on the bound subclass FakeHub.start makes
    protocol_version = "HTTP/1.1"  # keep-alive, as huggingface_hub's pooled client expects
    timeout = 30  # idle keep-alive connections end their thread
    server_version = "FakeHub/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read hub.requests instead
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # -- plumbing ----------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        self.query = parse_qs(parts.query)
        self.body = self._read_body() if method in ("POST", "PUT") else b""
        path = parts.path
        try:
            self.user = self._authenticate()
            self.hub.requests.append({"method": method, "path": path, "query": self.query,
                                      "user": self.user.user if self.user else None})
            self._route(method, path)
        except HubHTTPError as error:
            headers = dict(error.headers)
            if error.code:
                headers["X-Error-Code"] = error.code
            headers["X-Error-Message"] = error.message
            self._send_json({"error": error.message, **error.extra}, error.status, headers, head=method == "HEAD")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authenticate(self) -> TokenInfo | None:
        header = self.headers.get("Authorization")
        if not header:
            return None
        token = header.removeprefix("Bearer ").strip()
        with self.hub.lock:
            info = self.hub.tokens.get(token)
        if info is None:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        return info

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, head: bool = False,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None,
                   head: bool = False) -> None:
        self._send(status, json.dumps(data).encode(), headers, head)

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise HubHTTPError(400, "Request body is not valid JSON") from None

    # -- routes ------------------------------------------------------------------------

    def _route(self, method: str, path: str) -> None:
        if path == "/api/whoami-v2" and method == "GET":
            return self._whoami()
        if path == "/api/models" and method == "GET":
            return self._search()
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo()
        if path == "/api/validate-yaml" and method == "POST":
            return self._send_json({"errors": [], "warnings": []})
        if path.startswith("/__lfs/"):
            return self._lfs_object(method, path.removeprefix("/__lfs/"))
        if path.startswith("/api/models/"):
            return self._models_api(method, path.removeprefix("/api/models/"))
        if path.endswith(".git/info/lfs/objects/batch") and method == "POST":
            return self._lfs_batch(path.removeprefix("/").removesuffix(".git/info/lfs/objects/batch"))
        segments = path.strip("/").split("/")
        for repo_length in (2, 1):
            if len(segments) > repo_length + 2 and segments[repo_length] == "resolve" and method in ("GET", "HEAD"):
                repo_id = "/".join(segments[:repo_length])
                revision = unquote(segments[repo_length + 1])
                filename = unquote("/".join(segments[repo_length + 2:]))
                return self._resolve(method, repo_id, revision, filename)
        raise HubHTTPError(404, f"Sorry, we can't find the page you are looking for ({method} {path}).")

    def _models_api(self, method: str, rest: str) -> None:
        segments = rest.strip("/").split("/")
        for repo_length in (2, 1):
            if len(segments) > repo_length and segments[repo_length] in ("revision", "tree", "preupload", "commit"):
                repo_id = "/".join(segments[:repo_length])
                action = segments[repo_length]
                revision = unquote(segments[repo_length + 1]) if len(segments) > repo_length + 1 else "main"
                sub_path = unquote("/".join(segments[repo_length + 2:]))
                if action == "revision" and method == "GET":
                    return self._info(repo_id, revision)
                if action == "tree" and method == "GET":
                    return self._tree(repo_id, revision, sub_path)
                if action == "preupload" and method == "POST":
                    return self._preupload(repo_id, revision)
                if action == "commit" and method == "POST":
                    return self._commit(repo_id, revision)
        if method == "GET" and 1 <= len(segments) <= 2:
            return self._info("/".join(segments), "main")
        raise HubHTTPError(404, f"Sorry, we can't find the page you are looking for ({method} /api/models/{rest}).")

    # -- access rules ------------------------------------------------------------------

    def _can_see(self, repo: Repo) -> bool:
        return not repo.private or self._owns(repo)

    def _owns(self, repo: Repo) -> bool:
        return self.user is not None and repo.namespace in (self.user.user, *self.user.orgs)

    def _visible_repo(self, repo_id: str) -> Repo:
        with self.hub.lock:
            repo = self.hub.repos.get(repo_id)
        if repo is None or not self._can_see(repo):
            # The Hub answers 401 to anonymous requests and 404 to authenticated ones, both "RepoNotFound".
            raise HubHTTPError(401 if self.user is None else 404, "Repository not found", "RepoNotFound")
        return repo

    def _writable_repo(self, repo_id: str) -> Repo:
        if self.user is None:
            raise HubHTTPError(401, "You must be authenticated to push")
        repo = self._visible_repo(repo_id)
        if not self._owns(repo) or self.user.role != "write":
            raise HubHTTPError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def _revision(self, repo: Repo, revision: str) -> Commit:
        commit = repo.commit(revision)
        if commit is None:
            raise HubHTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # -- read endpoints ----------------------------------------------------------------

    def _whoami(self) -> None:
        if self.user is None:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        user = self.user
        self._send_json({
            "type": "user", "id": hashlib.md5(user.user.encode()).hexdigest()[:24], "name": user.user,
            "fullname": user.user.title(), "email": f"{user.user}@example.invalid", "emailVerified": True,
            "canPay": False, "isPro": False, "periodEnd": None, "avatarUrl": "",
            "orgs": [{"type": "org", "name": org, "fullname": org, "roleInOrg": "write"} for org in user.orgs],
            "auth": {"type": "access_token",
                     "accessToken": {"displayName": "test", "role": user.role, "createdAt": "2025-01-01T00:00:00.000Z"}},
        })

    def _info(self, repo_id: str, revision: str) -> None:
        repo = self._visible_repo(repo_id)
        with self.hub.lock:
            commit = self._revision(repo, revision)
            blobs = self.query.get("blobs", ["false"])[0].lower() in ("true", "1")
            self._send_json(_model_info(self.hub, repo, commit, blobs, self.query.get("expand")))

    def _search(self) -> None:
        search = self.query.get("search", [""])[0].lower()
        limit = int(self.query.get("limit", ["1000"])[0])
        with self.hub.lock:
            repos = [repo for repo in self.hub.repos.values()
                     if search in repo.repo_id.lower() and self._can_see(repo)]
            sort = self.query.get("sort", [None])[0]
            if sort in ("downloads", "likes"):
                repos.sort(key=lambda repo: getattr(repo, sort), reverse=True)
            expand = self.query.get("expand")
            listed = []
            for repo in repos[:limit]:
                info = _model_info(self.hub, repo, repo.head, blobs=False, expand=expand)
                if not expand:
                    # A listing carries fewer fields than a model's own page.
                    for key in ("siblings", "cardData", "config", "safetensors", "gated", "sha", "spaces"):
                        info.pop(key, None)
                listed.append(info)
        self._send_json(listed)

    def _tree(self, repo_id: str, revision: str, sub_path: str) -> None:
        repo = self._visible_repo(repo_id)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("true", "1")
        prefix = sub_path.strip("/") + "/" if sub_path.strip("/") else ""
        entries: list[dict[str, Any]] = []
        folders: set[str] = set()
        with self.hub.lock:
            commit = self._revision(repo, revision)
            for path in sorted(commit.files):
                if not path.startswith(prefix):
                    continue
                rest = path[len(prefix):]
                if "/" in rest and not recursive:
                    folders.add(prefix + rest.split("/")[0])
                    continue
                if recursive:
                    parents = rest.split("/")[:-1]
                    for depth in range(1, len(parents) + 1):
                        folders.add(prefix + "/".join(parents[:depth]))
                stored = commit.files[path]
                entry: dict[str, Any] = {"type": "file", "oid": stored.blob_id, "size": stored.size, "path": path}
                if stored.lfs:
                    entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": len(stored.pointer)}
                entries.append(entry)
        if prefix and not entries and not folders:
            raise HubHTTPError(404, f"Entry not found: {sub_path}", "EntryNotFound")
        folder_entries = [{"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0,
                           "path": folder} for folder in sorted(folders)]
        self._send_json(folder_entries + entries)

    def _resolve(self, method: str, repo_id: str, revision: str, filename: str) -> None:
        repo = self._visible_repo(repo_id)
        with self.hub.lock:
            commit = self._revision(repo, revision)
            stored = commit.files.get(filename)
        commit_header = {"X-Repo-Commit": commit.oid}
        if repo.gated and filename not in UNGATED_FILES and not self._owns(repo):
            if self.user is None:
                raise HubHTTPError(401, f"Access to model {repo_id} is restricted. You must have access to it and be "
                                   "authenticated to access it. Please log in.", "GatedRepo", commit_header)
            if self.user.user not in repo.access:
                raise HubHTTPError(403, f"Access to model {repo_id} is restricted and you are not in the authorized "
                                   f"list. Visit {self.hub.url}/{repo_id} to ask for access.", "GatedRepo",
                                   commit_header)
        if stored is None:
            raise HubHTTPError(404, "Entry not found", "EntryNotFound", commit_header)
        content = stored.content
        headers = {**commit_header, "ETag": f'"{stored.etag}"', "Accept-Ranges": "bytes"}
        if stored.lfs:
            headers.update({"X-Linked-Etag": f'"{stored.etag}"', "X-Linked-Size": str(stored.size)})
        status = 200
        byte_range = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "") or "")
        if byte_range and method == "GET":
            start = int(byte_range.group(1))
            end = int(byte_range.group(2)) if byte_range.group(2) else len(content) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content = content[start:end + 1]
            status = 206
        self._send(status, content, headers, head=method == "HEAD", content_type="application/octet-stream")

    # -- write endpoints ----------------------------------------------------------------

    def _create_repo(self) -> None:
        if self.user is None:
            raise HubHTTPError(401, "You must be authenticated to create a repo")
        payload = self._json_body()
        if payload.get("type", "model") not in (None, "model"):
            raise HubHTTPError(400, "This fake Hub only hosts models")
        namespace = payload.get("organization") or self.user.user
        name = payload.get("name") or ""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", name):
            raise HubHTTPError(400, f"Invalid repo name: {name!r}")
        if namespace not in (self.user.user, *self.user.orgs) or self.user.role != "write":
            raise HubHTTPError(403, f'You don\'t have the rights to create a model under the namespace "{namespace}"')
        repo_id = f"{namespace}/{name}"
        url = f"{self.hub.url}/{repo_id}"
        with self.hub.lock:
            if repo_id in self.hub.repos:
                # The Hub's 409 names the existing repo; create_repo(exist_ok=True) returns that url.
                raise HubHTTPError(409, "You already created this model repo", extra={"url": url})
            visibility = payload.get("visibility")
            private = visibility == "private" if visibility else bool(payload.get("private"))
            self.hub.add_model(repo_id, private=private, pipeline_tag=None)
        self._send_json({"url": url, "name": repo_id, "id": hashlib.md5(repo_id.encode()).hexdigest()[:24]})

    def _preupload(self, repo_id: str, revision: str) -> None:
        repo = self._writable_repo(repo_id)
        files = self._json_body().get("files", [])
        answers = []
        with self.hub.lock:
            head = self._revision(repo, revision)
            for item in files:
                sample = base64.b64decode(item.get("sample", ""))
                lfs = _goes_to_lfs(item["path"], int(item.get("size", 0)), sample)
                existing = head.files.get(item["path"])
                oid = None
                if existing is not None:
                    oid = existing.sha256 if existing.lfs else existing.git_oid
                answers.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                                "shouldIgnore": False, "oid": oid})
            self._send_json({"files": answers, "commitOid": head.oid})

    def _lfs_batch(self, repo_id: str) -> None:
        self._writable_repo(repo_id)
        payload = self._json_body()
        if "basic" not in payload.get("transfers", ["basic"]):
            raise HubHTTPError(400, "This fake Hub only offers the basic LFS transfer")
        objects = []
        for item in payload.get("objects", []):
            answer: dict[str, Any] = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            with self.hub.lock:
                stored = item["oid"] in self.hub.lfs_objects
            if not stored:
                href = f"{self.hub.url}/__lfs/{item['oid']}"
                answer["actions"] = {"upload": {"href": href, "header": {}},
                                     "verify": {"href": href + "/verify", "header": {}}}
            objects.append(answer)
        self._send_json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_object(self, method: str, rest: str) -> None:
        oid, _, action = rest.partition("/")
        if method == "PUT" and not action:
            if hashlib.sha256(self.body).hexdigest() != oid:
                raise HubHTTPError(400, "The uploaded content does not match its sha256")
            with self.hub.lock:
                self.hub.lfs_objects[oid] = self.body
            return self._send(200, b"")
        if method == "POST" and action == "verify":
            with self.hub.lock:
                present = oid in self.hub.lfs_objects
            if not present:
                raise HubHTTPError(404, f"LFS object {oid} was never uploaded")
            return self._send_json({"success": True})
        raise HubHTTPError(404, "Unknown LFS request")

    def _commit(self, repo_id: str, revision: str) -> None:
        repo = self._writable_repo(repo_id)
        if revision not in ("main", "refs/heads/main"):
            raise HubHTTPError(400, "This fake Hub only commits to main")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        with self.hub.lock:
            files = dict(repo.head.files)
            title = ""
            for line in lines:
                key, value = line.get("key"), line.get("value", {})
                if key == "header":
                    title = value.get("summary", "")
                    if value.get("parentCommit") and value["parentCommit"] != repo.head.oid:
                        raise HubHTTPError(412, "A commit has happened since. Please refresh and try again.")
                elif key == "file":
                    content = value["content"].encode()
                    if value.get("encoding") == "base64":
                        content = base64.b64decode(content)
                    files[value["path"]] = StoredFile(content, lfs=False)
                elif key == "lfsFile":
                    content = self.hub.lfs_objects.get(value["oid"])
                    if content is None:
                        raise HubHTTPError(422, f"LFS file {value['path']} was not uploaded before the commit")
                    files[value["path"]] = StoredFile(content, lfs=True)
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubHTTPError(404, "A file with this name doesn't exist", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {path: stored for path, stored in files.items() if not path.startswith(prefix)}
                else:
                    raise HubHTTPError(400, f"Unknown commit operation {key!r}")
            if not title:
                raise HubHTTPError(400, "A commit needs a summary")
            oid = self.hub._commit(repo, title, files)
        self._send_json({"success": True, "commitOid": oid, "commitUrl": f"{self.hub.url}/{repo_id}/commit/{oid}",
                         "hookOutput": "", "pullRequestUrl": None})
