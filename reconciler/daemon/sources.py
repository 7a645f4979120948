"""Where the daemon's spec comes from: a folder on disk, or a git repository it follows.

Both answer ``poll()``: ``None`` when nothing changed since the last poll, else a
``Candidate`` (a new revision, validated: ``loaded`` is set) or a ``Rejected`` one (the spec
does not load, the signature does not verify, the folder is too big...: ``error`` says why).
The daemon plans a candidate, applies it if it is valid and its plan passes the guards, then
calls ``mark_applied`` (it becomes the running spec) or ``mark_failed`` (the running spec stays).
A bad revision never replaces the running spec: that is the daemon's side of the contract,
and the sources remember both the last **applied** and the last **attempted** revision with
its error (as Flux's ``lastAppliedRevision`` / ``lastAttemptedRevision``).

- ``FolderSource``: the paths given with ``-f``. A directory is watched for new, changed and
  removed ``*.yaml``/``*.yml`` files (name, mtime and size of each), not only for the files it
  held when the daemon started. Its revision is ``files:<spec hash>``.
- ``GitSource``: a local mirror (``providers.git.GitMirror``) of one branch, fetched on an
  interval and when a webhook says so. Each new tip is exported (the ``--path`` folder only)
  into ``checkouts/<revision>/``, optionally signature-checked, and loaded. The applied revision
  is pinned in the mirror (``refs/reconciler/applied``), so after a restart or a force-push the
  daemon starts from the spec it was running, even when the branch tip is bad.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from providers.git.mirror import CommitInfo, GitMirror
from reconciler.core.errors import ProviderError, ReconcilerError, SpecError
from specs.errors import SpecProblem
from specs.loading import LoadedSpec, load_spec

log = logging.getLogger("reconciler.daemon.sources")

_YAML = (".yaml", ".yml")
#: how many old checkouts to keep beside the applied and the attempted one
_KEEP_CHECKOUTS = 2
Loader = Callable[[Sequence[str]], LoadedSpec]


@dataclass(frozen=True)
class Candidate:
    """A new revision of the spec, loaded and valid."""

    revision: str
    loaded: LoadedSpec
    commit: CommitInfo | None = None
    signature: str | None = None  # git's verdict when signatures are checked


@dataclass(frozen=True)
class Rejected:
    """A new revision that cannot run: ``error`` says why (one line per problem)."""

    revision: str
    error: str
    commit: CommitInfo | None = None


@dataclass(frozen=True)
class SourceStatus:
    """What the status page, ``/v1/fleet``, metrics and history show about the spec's origin."""

    kind: str  # "files" or "git"
    location: str  # the paths, or "<url> <branch>:<path>" (credentials redacted)
    applied: str | None = None
    applied_at: datetime | None = None
    attempted: str | None = None
    attempted_at: datetime | None = None
    attempted_error: str | None = None
    fetched_at: datetime | None = None
    fetch_error: str | None = None
    applied_subject: str | None = None

    def to_json(self) -> dict[str, Any]:
        def when(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "kind": self.kind,
            "location": self.location,
            "applied_revision": self.applied,
            "applied_at": when(self.applied_at),
            "applied_subject": self.applied_subject,
            "attempted_revision": self.attempted,
            "attempted_at": when(self.attempted_at),
            "attempted_error": self.attempted_error,
            "fetched_at": when(self.fetched_at),
            "fetch_error": self.fetch_error,
        }


class SpecSource(Protocol):
    def initial(self) -> LoadedSpec:
        """The spec to start with (the applied revision when one is known)."""
        ...

    def poll(self) -> Candidate | Rejected | None: ...

    def mark_applied(self, revision: str, at: datetime) -> None: ...

    def mark_failed(self, revision: str, error: str, at: datetime) -> None: ...

    def status(self) -> SourceStatus: ...

    @property
    def revision(self) -> str | None:
        """The running (applied) revision."""
        ...


_T = TypeVar("_T")


async def off_loop(work: Callable[[], _T], name: str = "spec-load") -> _T:
    """Run ``work`` (reading and validating a spec) in a daemon thread and await its result.

    Not ``asyncio.to_thread``: the event loop (heartbeats, ``/healthz``, signal handlers) never
    waits for it, and neither does shutdown. The default executor is joined when the loop
    closes, so a load that took long would hold SIGTERM up; a daemon thread is simply left
    behind. (Loading is bounded anyway: size, numbers, aliases and depth are capped before any
    conversion; this keeps the loop free whatever a future bug costs.)
    """
    import asyncio

    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def run() -> None:
        try:
            result = work()
        except BaseException as exc:  # handed to the awaiting coroutine, never lost
            error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, lambda: future.set_exception(error))
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, lambda: future.set_result(result))

    threading.Thread(target=run, name=name, daemon=True).start()
    return await future


def problem_text(exc: BaseException) -> str:
    """One readable text for a refused revision (every spec problem on its own line)."""
    if isinstance(exc, SpecError):
        return "\n".join(p.render() for p in exc.problems) or exc.message
    if isinstance(exc, ReconcilerError):
        return exc.message + (f" ({exc.hint})" if exc.hint else "")
    return f"{type(exc).__name__}: {exc}"


# --- a folder on disk ---------------------------------------------------------------------


def folder_fingerprint(paths: Sequence[str | os.PathLike[str]]) -> tuple[tuple[str, int, int], ...]:
    """(file, mtime_ns, size) of every spec file the paths name: a directory's *current*
    ``*.yaml``/``*.yml`` files (so new and removed files change it), a file as itself; a
    missing path counts as (path, -1, -1)."""
    result: list[tuple[str, int, int]] = []
    for given in paths:
        path = Path(given)
        try:
            if path.is_dir():
                entries = sorted(
                    p
                    for p in path.iterdir()
                    if p.suffix in _YAML and not p.name.startswith(".") and p.is_file()
                )
                result.append((str(path), 0, len(entries)))
            else:
                entries = [path]
        except OSError:
            result.append((str(path), -1, -1))
            continue
        for entry in entries:
            try:
                stat = entry.stat()
            except OSError:
                result.append((str(entry), -1, -1))
                continue
            result.append((str(entry), stat.st_mtime_ns, stat.st_size))
    return tuple(result)


class FolderSource:
    """The ``-f`` paths, watched for new, changed and removed files."""

    def __init__(
        self,
        paths: Sequence[str],
        *,
        loader: Loader = load_spec,
        loaded: LoadedSpec | None = None,
    ) -> None:
        self.paths = tuple(paths)
        self._loader = loader
        self._print = folder_fingerprint(self.paths)
        self._loaded = loaded
        self._applied: str | None = f"files:{loaded.spec_hash}" if loaded else None
        self._applied_at: datetime | None = None
        self._attempted: str | None = self._applied
        self._attempted_at: datetime | None = None
        self._error: str | None = None

    @property
    def revision(self) -> str | None:
        return self._applied

    def initial(self) -> LoadedSpec:
        if self._loaded is None:
            self._loaded = self._loader(list(self.paths))
            self._applied = self._attempted = f"files:{self._loaded.spec_hash}"
        self._print = folder_fingerprint(self.paths)
        return self._loaded

    def poll(self) -> Candidate | Rejected | None:
        current = folder_fingerprint(self.paths)
        if current == self._print:
            return None
        self._print = current
        try:
            loaded = self._loader(list(self.paths))
        except SpecError as exc:
            return Rejected(f"files:{_files_digest(current)}", problem_text(exc))
        revision = f"files:{loaded.spec_hash}"
        if revision == self._applied:
            return None  # a touch, or a change that does not change the spec
        return Candidate(revision, loaded)

    def mark_applied(self, revision: str, at: datetime) -> None:
        self._applied = self._attempted = revision
        self._applied_at = self._attempted_at = at
        self._error = None

    def mark_failed(self, revision: str, error: str, at: datetime) -> None:
        self._attempted, self._attempted_at, self._error = revision, at, error

    def status(self) -> SourceStatus:
        return SourceStatus(
            kind="files",
            location=" ".join(self.paths),
            applied=self._applied,
            applied_at=self._applied_at,
            attempted=self._attempted,
            attempted_at=self._attempted_at,
            attempted_error=self._error,
        )


def _files_digest(fingerprint: tuple[tuple[str, int, int], ...]) -> str:
    import hashlib

    return hashlib.sha256(repr(fingerprint).encode()).hexdigest()[:16]


# --- a git repository ---------------------------------------------------------------------


class GitSource:
    """One branch of a repository, followed through a local mirror."""

    def __init__(
        self,
        mirror: GitMirror,
        *,
        path: str = "",
        verify_signatures: bool = False,
        loader: Loader = load_spec,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.mirror = mirror
        self.path = path
        self.verify_signatures = verify_signatures
        self._loader = loader
        self._clock = clock
        self._state_file = mirror.mirror_dir / "status.json"
        self._checkouts = mirror.mirror_dir / "checkouts"
        self._status = SourceStatus(kind="git", location=self.location)
        self._load_status()

    @property
    def location(self) -> str:
        return f"{self.mirror.display_url} {self.mirror.branch}:{self.path or '/'}"

    @property
    def revision(self) -> str | None:
        return self._status.applied

    # --- persistence of the applied/attempted record (beside the mirror) -------------------

    def _load_status(self) -> None:
        try:
            document = json.loads(self._state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(document, dict) or document.get("location") != self.location:
            return  # another repository, branch or path: start afresh

        def when(key: str) -> datetime | None:
            value = document.get(key)
            try:
                return datetime.fromisoformat(value) if isinstance(value, str) else None
            except ValueError:
                return None

        def text(key: str) -> str | None:
            value = document.get(key)
            return value if isinstance(value, str) else None

        self._status = dataclasses.replace(
            self._status,
            applied=text("applied_revision"),
            applied_at=when("applied_at"),
            applied_subject=text("applied_subject"),
            attempted=text("attempted_revision"),
            attempted_at=when("attempted_at"),
            attempted_error=text("attempted_error"),
        )

    def _save_status(self) -> None:
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._status.to_json(), indent=2), encoding="utf-8")
        tmp.replace(self._state_file)

    # --- reading one revision --------------------------------------------------------------

    def _checkout(self, revision: str) -> Path:
        target = self._checkouts / revision
        if target.is_dir():
            return target
        self._checkouts.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = self._checkouts / f".{revision}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        export = self.mirror.export(revision, self.path, partial)
        for skipped in export.skipped:
            log.warning(
                f"commit {revision[:12]}: {skipped}",
                extra={"event": "git.skipped", "revision": revision},
            )
        partial.rename(target)
        return target

    def _load(self, revision: str) -> LoadedSpec:
        root = self._checkout(revision)
        try:
            return self._loader([str(root)])
        except SpecError as exc:
            raise SpecError(
                [self._relocate(p, root, revision) for p in exc.problems],
                warnings=[self._relocate(w, root, revision) for w in exc.warnings],
            ) from None

    def _relocate(self, problem: SpecProblem, root: Path, revision: str) -> SpecProblem:
        """Name the file as it is in the repository, at its commit: fleets/x.yaml@1a2b3c4d."""
        name = problem.file
        prefix = str(root)
        if name.startswith(prefix):
            inside = name[len(prefix) :].lstrip("/")
            name = "/".join(p for p in (self.path, inside) if p) or self.path or "."
        return dataclasses.replace(problem, file=f"{name}@{revision[:12]}")

    def _judge(self, revision: str) -> Candidate | Rejected:
        commit: CommitInfo | None = None
        try:
            commit = self.mirror.commit_info(revision)
            signature = self.mirror.verify(revision) if self.verify_signatures else None
            loaded = self._load(revision)
        except (SpecError, ProviderError) as exc:
            return Rejected(revision, problem_text(exc), commit)
        return Candidate(revision, loaded, commit, signature)

    # --- the SpecSource protocol -----------------------------------------------------------

    def initial(self) -> LoadedSpec:
        """Start from the applied revision if the mirror still has it; else fetch and take
        the branch tip, which must be valid (nothing runs yet to fall back on)."""
        pinned = self.mirror.pinned("applied") if self._status.applied else None
        if pinned is not None and pinned == self._status.applied:
            with contextlib.suppress(SpecError, ProviderError):
                loaded = self._load(pinned)
                log.info(
                    f"starting from the applied revision {pinned[:12]} of {self.location}",
                    extra={"event": "git.resumed", "revision": pinned},
                )
                return loaded
        tip = self._fetch()
        judged = self._judge(tip)
        now = self._clock()
        if isinstance(judged, Rejected):
            self.mark_failed(tip, judged.error, now)
            raise SpecError(
                [
                    SpecProblem(
                        f"{self.location}@{tip[:12]}",
                        0,
                        0,
                        "",
                        "the branch tip cannot run and no earlier revision was applied: "
                        + judged.error.replace("\n", "; "),
                        "fix the branch, or start once with -f on a good copy of the spec",
                    )
                ]
            )
        self.mark_applied(tip, now, judged.commit)
        return judged.loaded

    def _fetch(self) -> str:
        now = self._clock()
        try:
            tip = self.mirror.fetch()
        except ReconcilerError as exc:
            self._status = dataclasses.replace(
                self._status, fetched_at=now, fetch_error=problem_text(exc)
            )
            raise
        self._status = dataclasses.replace(self._status, fetched_at=now, fetch_error=None)
        return tip

    def poll(self) -> Candidate | Rejected | None:
        """Fetch; a tip that is neither applied nor already attempted is judged."""
        tip = self._fetch()
        if tip in (self._status.applied, self._status.attempted):
            return None
        return self._judge(tip)

    def mark_applied(self, revision: str, at: datetime, commit: CommitInfo | None = None) -> None:
        self.mirror.pin("applied", revision)
        if commit is None:
            with contextlib.suppress(ReconcilerError):
                commit = self.mirror.commit_info(revision)
        self._status = dataclasses.replace(
            self._status,
            applied=revision,
            applied_at=at,
            applied_subject=commit.subject if commit else None,
            attempted=revision,
            attempted_at=at,
            attempted_error=None,
        )
        self._save_status()
        self._prune()

    def mark_failed(self, revision: str, error: str, at: datetime) -> None:
        self._status = dataclasses.replace(
            self._status, attempted=revision, attempted_at=at, attempted_error=error[:4000]
        )
        self._save_status()

    def status(self) -> SourceStatus:
        return self._status

    def _prune(self) -> None:
        """Remove old checkouts (the applied and the attempted ones stay)."""
        if not self._checkouts.is_dir():
            return
        keep = {self._status.applied, self._status.attempted}
        entries = sorted(
            (p for p in self._checkouts.iterdir() if p.is_dir() and p.name not in keep),
            key=lambda p: p.stat().st_mtime,
        )
        for old in entries[: max(0, len(entries) - _KEEP_CHECKOUTS)]:
            shutil.rmtree(old, ignore_errors=True)


# --- building a git source from the operator's settings -----------------------------------

GIT_TOKEN_ENV = "RECONCILER_GIT_TOKEN"  # noqa: S105 (a variable name)
GIT_USERNAME_ENV = "RECONCILER_GIT_USERNAME"
GIT_SSH_KEY_ENV = "RECONCILER_GIT_SSH_KEY"
GIT_KNOWN_HOSTS_ENV = "RECONCILER_GIT_KNOWN_HOSTS"
WEBHOOK_SECRET_ENV = "RECONCILER_GIT_WEBHOOK_SECRET"  # noqa: S105 (a variable name)
#: the largest webhook body read (Argo CD's advice: bound the payload of an open endpoint)
MAX_WEBHOOK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class GitSettings:
    """``reconcile daemon --git URL [--branch] [--path] [--git-interval]
    [--git-allowed-signers FILE]``."""

    url: str
    branch: str = "main"
    path: str = ""
    interval: float = 60.0
    allowed_signers: Path | None = None
    timeout: float = 120.0


def mirror_folder(state_dir: Path, url: str, branch: str) -> Path:
    import hashlib

    digest = hashlib.sha256(f"{url}\n{branch}".encode()).hexdigest()[:16]
    return state_dir / "git" / digest


def git_source(
    settings: GitSettings,
    state_dir: Path,
    environ: Mapping[str, str],
    *,
    loader: Loader = load_spec,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> GitSource:
    """The daemon's git source; credentials come from the operator's environment, never from
    a spec: ``RECONCILER_GIT_TOKEN`` (HTTPS, with ``RECONCILER_GIT_USERNAME``, default
    ``x-access-token``), ``RECONCILER_GIT_SSH_KEY`` and ``RECONCILER_GIT_KNOWN_HOSTS`` (ssh)."""
    from providers.git.mirror import Credentials, check_path

    def path_of(name: str) -> Path | None:
        value = (environ.get(name) or "").strip()
        return Path(value) if value else None

    credentials = Credentials(
        token=(environ.get(GIT_TOKEN_ENV) or "").strip() or None,
        username=(environ.get(GIT_USERNAME_ENV) or "").strip() or "x-access-token",
        ssh_key=path_of(GIT_SSH_KEY_ENV),
        known_hosts=path_of(GIT_KNOWN_HOSTS_ENV),
    )
    mirror = GitMirror(
        settings.url,
        mirror_folder(state_dir, settings.url, settings.branch),
        branch=settings.branch,
        credentials=credentials,
        allowed_signers=settings.allowed_signers,
        timeout=settings.timeout,
    )
    return GitSource(
        mirror,
        path=check_path(settings.path),
        verify_signatures=settings.allowed_signers is not None,
        loader=loader,
        clock=clock,
    )


def webhook_authentic(headers: Mapping[str, str], body: bytes, secret: str) -> bool:
    """A push notification from the git host, authenticated with the shared secret:
    GitHub / Gitea / Forgejo sign the body (``X-Hub-Signature-256: sha256=<hex>``, Gitea also
    ``X-Gitea-Signature: <hex>``); GitLab sends the secret itself (``X-Gitlab-Token``).
    Compared in constant time. ``headers`` keys are lower case."""
    import hashlib
    import hmac

    if not secret:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    signature = headers.get("x-hub-signature-256", "")
    if signature.startswith("sha256="):
        return hmac.compare_digest(signature[7:].strip().lower(), expected)
    gitea = headers.get("x-gitea-signature") or headers.get("x-forgejo-signature")
    if gitea:
        return hmac.compare_digest(gitea.strip().lower(), expected)
    token = headers.get("x-gitlab-token")
    if token:
        return hmac.compare_digest(token.encode(), secret.encode())
    return False
