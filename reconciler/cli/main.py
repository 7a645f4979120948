"""The ``reconcile`` command. Errors become exit codes here and only here.

- a ``UserError`` (bad spec, bad flag, stale plan, missing credential, lock held): its message
  and hint on stderr, exit 1, no traceback;
- a provider or store error that reached the top: message, exit 1, no traceback;
- anything else is a bug: the traceback, a line saying so, exit 70.

Subcommands live in modules named for what they do and are registered below.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence

import click

from reconciler.core.errors import ReconcilerError, SpecError, UserError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_BUG = 70
EXIT_INTERRUPTED = 130


def report_error(exc: ReconcilerError | SpecError) -> None:
    """Print a user-facing error: message, then the hint. Never a traceback."""
    if isinstance(exc, SpecError):
        for line in exc.render_lines():
            click.echo(line, err=True)
        return
    click.echo(f"error: {exc.message}", err=True)
    if exc.hint:
        click.echo(f"hint: {exc.hint}", err=True)


def _interrupted() -> None:
    click.echo(
        "interrupted: nothing is lost; every change in flight is in the journal. Run the same "
        "command again to resume (a create is resolved by looking its server up, never repeated).",
        err=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    from reconciler.cli.commands import cli

    try:
        result = cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):
            _interrupted()
            return EXIT_INTERRUPTED
        click.echo("aborted", err=True)
        return EXIT_ERROR
    except click.ClickException as exc:
        exc.show()
        return int(exc.exit_code)
    except (UserError, SpecError) as exc:
        report_error(exc)
        return EXIT_ERROR
    except ReconcilerError as exc:
        report_error(exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        _interrupted()
        return EXIT_INTERRUPTED
    except Exception:
        import traceback  # only for a bug: light commands start without it (issue 14)

        traceback.print_exc()
        click.echo(
            "error: unexpected internal error (a bug in fleet-reconciler); the traceback above "
            "says where",
            err=True,
        )
        return EXIT_BUG
    return int(result) if isinstance(result, int) else EXIT_OK


def entry() -> None:
    import reconciler.cli

    reconciler.cli.process_ends_after_command = True
    code = main()
    # The process is ending: the collector's last passes at interpreter shutdown would walk
    # every object still alive (modules, SQLAlchemy, a 10,000-node fleet's servers and
    # records: ~180 ms CPU after a dry-run) only to find what the OS frees anyway. Frozen
    # objects are skipped by them; reference counting, atexit handlers and weakref
    # finalizers still run, and stdout/stderr are still flushed (issue 14).
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
