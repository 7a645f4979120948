"""A local mirror of a git repository that holds fleet specs (``reconcile daemon --git``).

The mirror is a bare repository in a folder of its own. ``fetch()`` brings the followed branch
up to date (a force-push is followed: the ref is updated with ``+``) and returns its tip;
``export(revision, dest)`` writes the spec folder of one commit into ``dest`` (regular files
only, bounded in count and size; symlinks and submodules are skipped); ``verify(revision)``
refuses a commit whose SSH signature does not verify against an allowed-signers file;
``pin(name, revision)`` keeps a commit reachable under ``refs/reconciler/<name>`` so that the
spec that runs can always be read back after a force-push or a restart.

git runs as a subprocess with a minimal environment: no user or system configuration, no
prompts, only the ``https``, ``ssh``, ``git`` and ``file`` transports (never ``ext::``), a
timeout that kills the whole process group, and credentials passed through the environment
(never on the command line, never in errors or logs).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Final

from reconciler.core.errors import NotFoundError, TerminalError, TransientError, UserError

#: refs of ours inside the mirror
FOLLOWED_REF: Final = "refs/reconciler/followed"
PIN_PREFIX: Final = "refs/reconciler/"
#: bounds on what one commit's spec folder may hold
MAX_FILES: Final = 500
MAX_FILE_BYTES: Final = 4 * 1024 * 1024
MAX_TOTAL_BYTES: Final = 32 * 1024 * 1024
ALLOWED_PROTOCOLS: Final = "https:ssh:git:file"
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


class GitSourceError(UserError):
    """The git settings themselves are wrong (bad URL, branch or path): fix the flags."""


class SignatureRefusedError(TerminalError):
    """The commit is unsigned, or signed by no allowed signer."""


def redact_url(url: str) -> str:
    """``https://user:token@host/x`` -> ``https://***@host/x`` (for messages and logs)."""
    return _USERINFO.sub(lambda m: m.group("scheme") + "***@", url)


@dataclass(frozen=True)
class Credentials:
    """How to authenticate to the remote, chosen by the operator (never by a spec).

    ``token``: an HTTPS token sent as HTTP basic auth (``username`` defaults to
    ``x-access-token``, which GitHub, Gitea and GitLab accept), through git's environment
    configuration, never the command line. ``ssh_key`` / ``known_hosts``: for ``ssh://`` and
    ``git@host:path`` remotes; the host key is always checked (``StrictHostKeyChecking=yes``)."""

    token: str | None = field(default=None, repr=False)
    username: str = "x-access-token"
    ssh_key: Path | None = None
    known_hosts: Path | None = None

    def secrets(self) -> tuple[str, ...]:
        if not self.token:
            return ()
        basic = base64.b64encode(f"{self.username}:{self.token}".encode()).decode()
        return (self.token, basic)


@dataclass(frozen=True)
class CommitInfo:
    revision: str
    author: str
    committed_at: datetime
    subject: str


@dataclass(frozen=True)
class ExportedFile:
    path: str  # relative to the spec folder, POSIX
    size: int


@dataclass(frozen=True)
class Export:
    revision: str
    root: Path
    files: tuple[ExportedFile, ...]
    skipped: tuple[str, ...] = ()  # e.g. "link.yaml: a symlink, not followed"


def check_branch(branch: str) -> str:
    if (
        not branch
        or branch.startswith(("-", "/", "."))
        or branch.endswith(("/", ".lock", "."))
        or ".." in branch
        or "@{" in branch
        or "//" in branch
        or any(c in branch for c in " ~^:?*[\\\x7f")
        or any(ord(c) < 32 for c in branch)
        or len(branch) > 200
    ):
        raise GitSourceError(
            f"--branch {branch!r} is not a valid branch name", hint="e.g. --branch main"
        )
    return branch


def check_path(path: str) -> str:
    """A folder inside the repository: relative, no ``..``; '' or '.' is the root."""
    text = path.strip().strip("/")
    if text in ("", "."):
        return ""
    parts = PurePosixPath(text).parts
    if any(part in ("..", ".git") for part in parts) or "\\" in text or "\x00" in text:
        raise GitSourceError(
            f"--path {path!r} must be a folder inside the repository",
            hint="e.g. --path fleets/production (relative, without '..')",
        )
    return "/".join(p for p in parts if p != ".")


def check_url(url: str) -> str:
    text = url.strip()
    if not text or text.startswith("-") or any(ord(c) < 32 for c in text):
        raise GitSourceError(f"--git {redact_url(url)!r} is not a repository URL")
    scheme = text.split("://", 1)[0].lower() if "://" in text else None
    if scheme is None:
        # scp-like ssh (git@host:path) or a local path
        if "::" in text:
            raise GitSourceError(
                f"--git {redact_url(text)!r}: remote helpers ('transport::address') are refused",
                hint="use an https://, ssh:// or file:// URL",
            )
        return text
    if scheme not in ("https", "ssh", "git", "file"):
        raise GitSourceError(
            f"--git {redact_url(text)!r}: the {scheme}:// transport is not allowed",
            hint="use an https://, ssh:// or file:// URL (plain http:// would send the token "
            "in clear)",
        )
    return text


class GitMirror:
    def __init__(
        self,
        url: str,
        mirror_dir: Path,
        *,
        branch: str = "main",
        credentials: Credentials | None = None,
        allowed_signers: Path | None = None,
        timeout: float = 120.0,
        git: str = "git",
        git_dir: Path | None = None,
    ) -> None:
        self.url = check_url(url)
        #: the bare repository; ``git_dir`` reads an existing repository instead (read-only
        #: use: ``resolve``, ``export``, ``commit_info``), e.g. the working copy's ``.git``
        self.git_dir = git_dir if git_dir is not None else mirror_dir / "repo.git"
        self.branch = check_branch(branch)
        self.mirror_dir = mirror_dir
        self.credentials = credentials or Credentials()
        self.allowed_signers = allowed_signers
        self.timeout = timeout
        self._git = git
        self._secrets = tuple(s for s in self.credentials.secrets() if s)

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    # --- running git -------------------------------------------------------------------------

    def _environ(self) -> dict[str, str]:
        home = self.mirror_dir / "home"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "GNUPGHOME": str(home / ".gnupg"),
            "LC_ALL": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false",
            "SSH_ASKPASS": "/bin/false",
            "GIT_ALLOW_PROTOCOL": ALLOWED_PROTOCOLS,
        }
        config: list[tuple[str, str]] = [
            ("protocol.ext.allow", "never"),
            ("core.hooksPath", "/dev/null"),
            ("gc.auto", "0"),
        ]
        if self.credentials.token:
            basic = base64.b64encode(
                f"{self.credentials.username}:{self.credentials.token}".encode()
            ).decode()
            config.append(("http.extraHeader", f"Authorization: Basic {basic}"))
        ssh = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
        if self.credentials.ssh_key is not None:
            ssh += ["-i", str(self.credentials.ssh_key), "-o", "IdentitiesOnly=yes"]
        if self.credentials.known_hosts is not None:
            ssh += ["-o", f"UserKnownHostsFile={self.credentials.known_hosts}"]
        env["GIT_SSH_COMMAND"] = shlex.join(ssh)
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for index, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{index}"] = key
            env[f"GIT_CONFIG_VALUE_{index}"] = value
        return env

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = text.replace(self.url, self.display_url)
        return redact_url(text)

    def _run(
        self,
        args: Sequence[str],
        *,
        doing: str,
        input_bytes: bytes | None = None,
        check: bool = True,
        extra_env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        env = self._environ()
        if extra_env:
            env.update(extra_env)
        command = [self._git, "--git-dir", str(self.git_dir), *args]
        try:
            process = subprocess.Popen(  # noqa: S603 (fixed argv, no shell)
                command,
                stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise GitSourceError(
                f"cannot run git ({exc.strerror or exc})",
                hint="install git (Debian: apt-get install git) or put it on PATH",
            ) from exc
        try:
            out, err = process.communicate(input_bytes, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):  # the group may be gone already
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise TransientError(
                f"git {doing} ({self.display_url}): no answer within {self.timeout:g}s",
                hint="the remote is slow or unreachable; the next fetch tries again",
            ) from None
        result = subprocess.CompletedProcess(command, process.returncode, out, err)
        if check and result.returncode != 0:
            message = self._scrub(err.decode("utf-8", "replace").strip())
            raise TransientError(
                f"git {doing} ({self.display_url}) failed: {_clip(message)}",
                hint="check the URL, the credentials and the network; the next fetch tries again",
            )
        return result

    # --- the mirror --------------------------------------------------------------------------

    def ensure(self) -> None:
        repo = self.git_dir
        (self.mirror_dir / "home").mkdir(parents=True, exist_ok=True, mode=0o700)
        if (repo / "HEAD").exists():
            return
        self.mirror_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._run(["init", "--quiet", "--bare", str(repo)], doing="init")

    def fetch(self) -> str:
        """Fetch the followed branch (force-pushes included); return its tip."""
        self.ensure()
        refspec = f"+refs/heads/{self.branch}:{FOLLOWED_REF}"
        result = self._run(
            ["fetch", "--quiet", "--no-tags", "--no-recurse-submodules", "--", self.url, refspec],
            doing="fetch",
            check=False,
        )
        if result.returncode != 0:
            message = self._scrub(result.stderr.decode("utf-8", "replace").strip())
            if "couldn't find remote ref" in message or "could not find remote ref" in message:
                raise NotFoundError(
                    f"branch {self.branch!r} does not exist in {self.display_url}",
                    hint="check --branch",
                )
            raise TransientError(
                f"git fetch ({self.display_url}) failed: {_clip(message)}",
                hint="check the URL, the credentials and the network; the next fetch tries again",
            )
        return self.resolve(FOLLOWED_REF)

    def resolve(self, ref: str) -> str:
        if ref.startswith("-") or any(c.isspace() or ord(c) < 32 for c in ref) or not ref:
            raise GitSourceError(f"{ref!r} is not a git revision")
        result = self._run(
            ["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            doing="rev-parse",
            check=False,
        )
        revision = result.stdout.decode().strip()
        if result.returncode != 0 or not _SHA.match(revision):
            raise NotFoundError(f"{ref} is not a commit in the mirror of {self.display_url}")
        return revision

    def pin(self, name: str, revision: str) -> None:
        """Keep ``revision`` reachable as ``refs/reconciler/<name>``."""
        _check_revision(revision)
        self._run(["update-ref", PIN_PREFIX + name, revision], doing="update-ref")

    def pinned(self, name: str) -> str | None:
        try:
            return self.resolve(PIN_PREFIX + name)
        except NotFoundError:
            return None

    def commit_info(self, revision: str) -> CommitInfo:
        _check_revision(revision)
        result = self._run(
            ["show", "-s", "--format=%an <%ae>%x00%ct%x00%s", revision], doing="show"
        )
        author, stamp, subject = (
            result.stdout.decode("utf-8", "replace").rstrip("\n").split("\x00", 2)
        )
        return CommitInfo(
            revision=revision,
            author=author[:200],
            committed_at=datetime.fromtimestamp(int(stamp), tz=UTC),
            subject=subject[:300],
        )

    def verify(self, revision: str) -> str:
        """Refuse ``revision`` unless it carries an SSH signature by an allowed signer.
        Returns git's verdict line (e.g. 'Good "git" signature for alice@example.com ...')."""
        _check_revision(revision)
        if self.allowed_signers is None:
            raise GitSourceError("signature verification asked without an allowed-signers file")
        if not self.allowed_signers.is_file():
            raise GitSourceError(
                f"allowed-signers file {self.allowed_signers} does not exist",
                hint="one line per signer: '<email> <ssh public key>' (see ssh-keygen(1))",
            )
        result = self._run(
            [
                "-c",
                "gpg.ssh.allowedSignersFile=" + str(self.allowed_signers),
                "verify-commit",
                "--raw",
                revision,
            ],
            doing="verify-commit",
            check=False,
        )
        verdict = self._scrub(result.stderr.decode("utf-8", "replace").strip())
        if result.returncode != 0:
            reason = "it is not signed" if not verdict else _clip(verdict)
            raise SignatureRefusedError(
                f"commit {revision[:12]} refused: its signature does not verify ({reason})",
                hint="sign commits with an SSH key listed in the allowed-signers file "
                "(git config gpg.format ssh; git commit -S)",
            )
        return _clip(verdict)

    def export(self, revision: str, path: str, dest: Path) -> Export:
        """Write the files under ``path`` at ``revision`` into ``dest`` (which must not exist).

        Regular files only (mode 100644/100755); symlinks and submodules are skipped and
        reported; at most MAX_FILES files, MAX_FILE_BYTES each, MAX_TOTAL_BYTES in all."""
        _check_revision(revision)
        folder = check_path(path)
        listing = self._run(
            ["ls-tree", "-r", "-z", "--long", "--full-tree", revision, "--", folder or "."],
            doing="ls-tree",
        ).stdout
        entries: list[tuple[str, str, int]] = []
        skipped: list[str] = []
        total = 0
        for record in listing.split(b"\x00"):
            if not record:
                continue
            meta, _, raw_name = record.partition(b"\t")
            mode, kind, obj, size_text = meta.decode().split()
            name = raw_name.decode("utf-8", "replace")
            relative = name[len(folder) + 1 :] if folder else name
            if kind != "blob" or mode not in ("100644", "100755"):
                skipped.append(f"{relative}: a {'symlink' if mode == '120000' else kind}, ignored")
                continue
            size = int(size_text)
            if size > MAX_FILE_BYTES:
                raise TerminalError(
                    f"commit {revision[:12]}: {name} is {size:,} bytes (at most "
                    f"{MAX_FILE_BYTES:,})",
                    hint="a spec file is small YAML; keep large files out of the spec folder",
                )
            total += size
            entries.append((relative, obj, size))
        if len(entries) > MAX_FILES or total > MAX_TOTAL_BYTES:
            raise TerminalError(
                f"commit {revision[:12]}: the spec folder holds {len(entries)} files, "
                f"{total:,} bytes (at most {MAX_FILES} files, {MAX_TOTAL_BYTES:,} bytes)",
                hint="point --path at the folder of fleet specs only",
            )
        if not entries:
            raise TerminalError(
                f"commit {revision[:12]}: no file under {folder or 'the repository root'!r}",
                hint="check --path",
            )
        dest.mkdir(parents=True, exist_ok=False, mode=0o700)
        request = b"".join(obj.encode() + b"\n" for _, obj, _ in entries)
        blobs = self._run(["cat-file", "--batch"], doing="cat-file", input_bytes=request).stdout
        offset = 0
        files: list[ExportedFile] = []
        for relative, obj, size in entries:
            header_end = blobs.index(b"\n", offset)
            header = blobs[offset:header_end].decode().split()
            if header[0] != obj or header[1] != "blob" or int(header[2]) != size:
                raise TerminalError(f"git cat-file answered {header!r} for {obj}")
            start = header_end + 1
            content = blobs[start : start + size]
            offset = start + size + 1  # the newline after each object
            target = _inside(dest, relative)
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            target.write_bytes(content)
            files.append(ExportedFile(relative, size))
        return Export(revision, dest, tuple(files), tuple(skipped))


def _inside(root: Path, relative: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or any(p in ("", ".", "..") for p in parts) or relative.startswith("/"):
        raise TerminalError(f"refusing a path that leaves the spec folder: {relative!r}")
    return root.joinpath(*parts)


def _check_revision(revision: str) -> None:
    if not _SHA.match(revision):
        raise GitSourceError(f"{revision!r} is not a full commit id")


def _clip(message: str, limit: int = 400) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 3] + "..."
