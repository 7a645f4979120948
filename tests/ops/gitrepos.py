"""A real git repository made by a test: commits of spec files, force-pushes, SSH signing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

FLEET = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {name: acme}
provider: {type: simulator, build_time: 1s}
plans:
  baseline: {rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}
"""
REGIONS = """\
regions:
  dallas: {location_id: 13, plan: baseline, nodes: 2}
"""
TWO_REGIONS = """\
regions:
  dallas: {location_id: 13, plan: baseline, nodes: 2}
  seattle: {location_id: 12, plan: baseline, nodes: 1}
"""
BROKEN_REGIONS = """\
regions:
  dallas: {location_id: 13, plan: basline, nodes: 2}
"""


class Repo:
    """A working repository whose branch ``main`` a GitMirror follows (file:// URL)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.git("init", "--quiet", "--initial-branch=main")
        self.git("config", "user.name", "Alice Operator")
        self.git("config", "user.email", "alice@example.com")
        self.git("config", "commit.gpgsign", "false")

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def git(self, *args: str, env: dict[str, str] | None = None) -> str:
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root.parent / "home"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "LC_ALL": "C",
            **(env or {}),
        }
        result = subprocess.run(
            ["git", *args], cwd=self.root, env=environ, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def commit(
        self, message: str, files: dict[str, str | None], *, sign_key: Path | None = None
    ) -> str:
        for name, content in files.items():
            path = self.root / name
            if content is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        self.git("add", "-A")
        args = ["commit", "--quiet", "-m", message]
        if sign_key is not None:
            args = [
                "-c",
                "gpg.format=ssh",
                "-c",
                f"user.signingkey={sign_key}",
                "commit",
                "--quiet",
                "-S",
                "-m",
                message,
            ]
        self.git(*args)
        return self.git("rev-parse", "HEAD")

    def reset_hard(self, revision: str) -> None:
        """What a force-push leaves on the remote: the branch moved to another history."""
        self.git("reset", "--quiet", "--hard", revision)


def ssh_key(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True
    )
    return key


def allowed_signers(path: Path, email: str, key: Path) -> Path:
    public = key.with_suffix(".pub").read_text().split()
    path.write_text(f"{email} {public[0]} {public[1]}\n")
    return path
