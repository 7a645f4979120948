"""`reconcile completion bash|zsh|fish`: the shell completion script (click's own).

reconcile completion bash > ~/.local/share/bash-completion/completions/reconcile
reconcile completion zsh  > "${fpath[1]}/_reconcile"
reconcile completion fish > ~/.config/fish/completions/reconcile.fish
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

PROG = "reconcile"
COMPLETE_VAR = "_RECONCILE_COMPLETE"


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> int:
    """Print the completion script for SHELL (commands, options, choices).

    bash: reconcile completion bash > ~/.local/share/bash-completion/completions/reconcile;
    zsh: reconcile completion zsh > "${fpath[1]}/_reconcile";
    fish: reconcile completion fish > ~/.config/fish/completions/reconcile.fish."""
    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - the Choice above lists only supported shells
        raise click.BadParameter(f"unsupported shell {shell!r}")
    root = ctx.find_root().command
    click.echo(cls(root, {}, PROG, COMPLETE_VAR).source())
    return 0
