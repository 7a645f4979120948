"""`reconcile diff OLD NEW`: what a change of the spec changes in the desired state.

Each side is a spec file or directory, or a git revision and folder of the repository in the
current directory (``origin/main:fleets``, ``HEAD~1:fleet.yaml``), read from git's objects
without touching the working tree. The output is one line per changed field
(``~ regions.dallas.nodes: 2 → 3``), a Markdown table for a pull-request comment, or JSON.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path

import click

from reconciler.core.errors import SpecError, UserError
from reconciler.core.specdiff import SpecChange, diff_specs
from reconciler.views.markdown import render_spec_diff
from specs.errors import SpecProblem
from specs.loading import LoadedSpec, load_spec

FORMAT_VERSION = 1
EXIT_CHANGES = 2


def _git_dir(cwd: Path) -> Path:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--absolute-git-dir"],  # noqa: S607 (git from PATH, like a user)
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"cannot run git: {exc}", hint="install git or pass spec paths") from exc
    if result.returncode != 0:
        raise UserError(
            f"{cwd} is not inside a git repository, so REV:PATH cannot be read",
            hint="run from the spec repository, or pass two spec paths",
        )
    return Path(result.stdout.strip())


def _side(argument: str, stack: ExitStack) -> tuple[list[str], str]:
    """(paths to load, label). A path that exists wins over a REV:PATH reading."""
    if Path(argument).exists() or ":" not in argument:
        return [argument], argument
    from providers.git.mirror import GitMirror

    revision, _, inside = argument.partition(":")
    scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="reconcile-diff-")))
    mirror = GitMirror(
        "file:///dev/null", scratch / "git", git_dir=_git_dir(Path.cwd()), timeout=60
    )
    commit = mirror.resolve(revision)
    export = mirror.export(commit, inside, scratch / "spec")
    single = [f.path for f in export.files]
    if len(single) == 1 and inside.endswith(single[0]) and inside.endswith((".yaml", ".yml")):
        return [str(export.root / single[0])], f"{revision}:{inside}"
    return [str(export.root)], f"{revision}:{inside}"


def _load(paths: list[str], label: str, root: str) -> LoadedSpec:
    try:
        return load_spec(paths)
    except SpecError as exc:
        if root == label:
            raise

        # name the files as they are in the repository: REV:PATH/file.yaml
        def relocate(problem: SpecProblem) -> SpecProblem:
            name = problem.file
            if name.startswith(root):
                name = label.rstrip("/") + name[len(root) :]
            return SpecProblem(
                name, problem.line, problem.column, problem.field, problem.message, problem.hint
            )

        raise SpecError(
            [relocate(p) for p in exc.problems], warnings=[relocate(w) for w in exc.warnings]
        ) from None


def changes_document(changes: list[SpecChange], old: str, new: str) -> dict[str, object]:
    return {
        "format_version": FORMAT_VERSION,
        "old": old,
        "new": new,
        "changes": [{"kind": c.kind, "path": c.path, "old": c.old, "new": c.new} for c in changes],
    }


@click.command("diff")
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
@click.option(
    "--output",
    "-o",
    type=click.Choice(["text", "markdown", "json"]),
    default="text",
    show_default=True,
)
@click.option(
    "--detailed-exitcode", is_flag=True, help="Exit 0 when nothing changed, 2 when something did."
)
def diff(old: str, new: str, output: str, detailed_exitcode: bool) -> int:
    """Show what changes in the desired state from OLD to NEW, field by field
    (e.g. `~ regions.dallas.nodes: 2 → 3`).

    OLD and NEW are spec files or directories, or REV:PATH in the current git repository
    (e.g. `reconcile diff origin/main:fleets fleets`). An invalid NEW is reported like
    `reconcile validate` (exit 1); an invalid or missing OLD counts as an empty spec."""
    with ExitStack() as stack:
        old_paths, old_label = _side(old, stack)
        new_paths, new_label = _side(new, stack)
        new_loaded = _load(new_paths, new_label, new_paths[0])
        note = None
        try:
            old_spec = _load(old_paths, old_label, old_paths[0]).spec
        except SpecError as exc:
            old_spec = None
            note = (
                f"{old_label} does not load ({len(exc.problems)} problem(s)): compared with "
                "an empty spec"
            )
    changes = diff_specs(old_spec, new_loaded.spec)
    if note:
        click.echo(f"warning: {note}", err=True)
    if output == "json":
        click.echo(
            json.dumps(changes_document(changes, old_label, new_label), indent=2, default=str)
        )
    elif output == "markdown":
        click.echo(render_spec_diff(changes, old_label, new_label), nl=False)
    elif not changes:
        click.echo(f"No changes in the desired state between {old_label} and {new_label}.")
    else:
        for change in changes:
            click.echo(change.render())
        count = len(changes)
        click.echo(f"{count} {'change' if count == 1 else 'changes'} in the desired state.")
    if detailed_exitcode and changes:
        return EXIT_CHANGES
    return 0


__all__ = ["changes_document", "diff"]
