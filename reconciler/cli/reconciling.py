"""The root ``reconcile`` command: observe, plan and (unless ``--dry-run``) apply.

Exit codes: 0 done (or nothing to do), 1 error or any failed change, 2 with
``--detailed-exitcode`` when the plan has changes. Every user error is raised as a
``UserError`` with a hint and rendered by ``reconciler.cli.main`` (no traceback).

Test hook: ``RECONCILER_TEST_KILL_AT_STEP=k`` makes the process SIGKILL itself just before its
k-th mutating step of an apply (a journal write or a mutating cloud call), to prove that a rerun
converges with no duplicate and no orphan. ``RECONCILER_LOCK_TTL`` (seconds, default 120)
is the writer lock's lease; it is renewed every third of it while the apply runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import click

from reconciler.core.collector import collector_paused
from reconciler.core.errors import LeadershipLostError, LockHeldError, StoreError, UserError
from reconciler.core.planning import PlanOptions
from reconciler.core.plans import Action, Plan
from reconciler.core.ports import Lease, StorePort
from reconciler.engine.applying import ProgressHooks
from reconciler.engine.converging import (
    Convergence,
    WaitEnd,
    remaining_work,
    wait_for_convergence,
)
from reconciler.engine.fences import WriterFence
from reconciler.engine.observing import Snapshot
from reconciler.engine.reconciling import (
    Reconciler,
    RunHooks,
    RunRequest,
    RunResult,
    SavedPlan,
    lock_name,
)
from reconciler.views.human import render_plan
from reconciler.views.markdown import render_markdown
from reconciler.views.progress import BarProgress, PlainProgress, render_report
from reconciler.wiring import (
    STATE_DIR_ENV,
    build_cloud,
    build_provisioning,
    build_reconciler,
    build_store,
    default_state_dir,
)
from specs.loading import LoadedSpec, load_spec

DEFAULT_SPEC = "fleet.yaml"
EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
#: ``--timeout`` when the options did not give one (``reconciler.cli.options``: 10m)
DEFAULT_TIMEOUT = 600.0
KILL_ENV = "RECONCILER_TEST_KILL_AT_STEP"
LOCK_TTL_ENV = "RECONCILER_LOCK_TTL"
DEFAULT_LOCK_TTL = 120.0


class NoSpecError(UserError):
    """No spec file given and ./fleet.yaml is absent."""


#: the state database's URL (``state.sessions.ENV_VAR``; unset: ./.reconciler/state.db)
DATABASE_URL_ENV = "RECONCILER_DATABASE_URL"


class PlanFileError(UserError):
    """A plan file that cannot be read or written."""


class ConfirmationRequiredError(UserError):
    """Destroys need a confirmation that could not be asked for."""


class NotConvergedError(UserError):
    """``--wait``: the fleet did not match the spec within the timeout (or cannot by
    waiting)."""


def run(ctx: click.Context, **options: Any) -> int:
    """The command body (called by the root group when no subcommand is given)."""
    files: tuple[str, ...] = tuple(options.get("files") or ())
    plan_file = options.get("plan_file")
    if not files and plan_file is not None:
        # a saved plan names the spec it was made from
        files = _spec_paths_of_plan(Path(str(plan_file)))
    loaded = _load(files)
    for warning in loaded.warnings:
        click.echo(f"warning: {warning.render()}", err=True)
    environ: Mapping[str, str] = os.environ
    # with neither variable set, the database and the simulated account live in
    # ./.reconciler/: a saved plan names that folder, and --plan run elsewhere uses it (the
    # local default would be another database and another account)
    default = not (environ.get(STATE_DIR_ENV) or environ.get(DATABASE_URL_ENV))
    state_dir = str(default_state_dir(environ).resolve()) if default else None
    if plan_file is not None and default:
        made_in = _state_dir_of_plan(Path(str(plan_file)))
        if made_in and made_in != state_dir:
            environ = {
                **environ,
                STATE_DIR_ENV: made_in,
                DATABASE_URL_ENV: f"sqlite:///{Path(made_in) / 'state.db'}",
            }
            click.echo(f"using the state folder the plan was made against: {made_in}", err=True)
    settings = _Settings(
        dry_run=bool(options.get("dry_run")),
        yes=bool(options.get("yes")),
        output=str(options.get("output") or "text"),
        detailed=bool(options.get("detailed_exitcode")),
        out_file=options.get("out_file"),
        plan_file=options.get("plan_file"),
        allow_mass_destroy=bool(options.get("allow_mass_destroy")),
        color=_color(bool(options.get("no_color")), str(options.get("output") or "text")),
        spec_paths=tuple(str(Path(p).resolve()) for p in (files or (DEFAULT_SPEC,))),
        state_dir=state_dir,
        wait=bool(options.get("wait", True)),
        timeout=float(options.get("timeout") or 0.0)
        if options.get("timeout") is not None
        else DEFAULT_TIMEOUT,
    )
    if settings.dry_run:
        # one observation, one plan, one rendering: bounded work that allocates much and
        # makes few cycles; the collector's passes over it were a fifth of a 10,000-node
        # dry-run (issue 14). Applies (which may wait for minutes) keep the collector.
        with collector_paused():
            return asyncio.run(_reconcile(loaded, settings, environ))
    return asyncio.run(_reconcile(loaded, settings, environ))


class _Settings:
    def __init__(
        self,
        *,
        dry_run: bool,
        yes: bool,
        output: str,
        detailed: bool,
        out_file: Path | None,
        plan_file: Path | None,
        allow_mass_destroy: bool,
        color: bool,
        spec_paths: tuple[str, ...] = (),
        state_dir: str | None = None,
        wait: bool = False,
        timeout: float = 0.0,
    ) -> None:
        #: after applying, wait for the fleet to converge (``--wait``), at most ``timeout`` s
        self.wait = wait
        self.timeout = timeout
        #: the spec paths, absolute (recorded in a saved plan so that --plan finds them)
        self.spec_paths = spec_paths
        #: the state folder, absolute, when no database URL is set (recorded likewise)
        self.state_dir = state_dir
        self.dry_run = dry_run
        self.yes = yes
        self.output = output
        self.detailed = detailed
        self.out_file = out_file
        self.plan_file = plan_file
        self.allow_mass_destroy = allow_mass_destroy
        self.color = color


def cli_actor() -> str:
    """Who runs this command, for the run history and the journal: ``cli user@host``
    (``RECONCILER_ACTOR`` overrides it, e.g. in CI: ``ci github:alice``)."""
    import getpass

    override = (os.environ.get("RECONCILER_ACTOR") or "").strip()
    if override:
        return override[:200]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli {user}@{socket.gethostname()}"


def _load(files: tuple[str, ...]) -> LoadedSpec:
    if not files:
        if not Path(DEFAULT_SPEC).exists():
            raise NoSpecError(
                f"no spec given and ./{DEFAULT_SPEC} does not exist",
                hint="pass -f examples/quickstart.yaml (or -f PATH to your fleet spec)",
            )
        files = (DEFAULT_SPEC,)
    return load_spec(list(files))


def _color(no_color: bool, output: str) -> bool:
    """Colors and the progress bar: only on an interactive terminal that can show them
    (``TERM=dumb``, an unset ``TERM``, ``NO_COLOR`` and ``--no-color`` mean plain text)."""
    if output != "text" or no_color or not sys.stdout.isatty():
        return False  # plain text, and no import of rich (~0.05 s) through the tables module
    from reconciler.views.tables import wants_rich

    return wants_rich(sys.stdout, color=True)


def _echo_info(settings: _Settings) -> Callable[[str], None]:
    """Progress and reports go to stdout with text output, to stderr otherwise (so that JSON
    and Markdown on stdout stay clean)."""
    err = settings.output != "text"
    return lambda text: click.echo(text, err=err)


# --- the run -----------------------------------------------------------------------------


async def _reconcile(loaded: LoadedSpec, settings: _Settings, environ: Mapping[str, str]) -> int:
    store = build_store(environ)
    try:
        async with build_cloud(loaded, environ=environ, lists_once=settings.dry_run) as cloud:
            if settings.dry_run:  # planning needs no DNS, SSH or mail (nor their secrets)
                return await _run(build_reconciler(loaded, cloud, store), settings, None, environ)
            async with build_provisioning(loaded, cloud, environ=environ) as provisioning:
                reconciler = build_reconciler(loaded, cloud, store, provisioning)
                async with _writer_lock(store, reconciler, environ) as (lease, fence):
                    return await _run(reconciler, settings, lease, environ, fence)
    finally:
        store.close()


class _CliHooks(RunHooks):
    """The CLI's part of a run: save and print the plan, ask before destroying."""

    def __init__(
        self,
        settings: _Settings,
        *,
        before_mutation: Callable[[], None] | None,
        progress: ProgressHooks | None,
        fence: WriterFence | None = None,
    ) -> None:
        super().__init__(before_mutation=before_mutation, progress=progress, fence=fence)
        self.settings = settings

    def planned(self, plan: Plan, snapshot: Snapshot) -> None:
        if self.settings.out_file is not None:
            _write_plan(
                self.settings.out_file,
                plan,
                snapshot.fingerprint,
                self.settings.spec_paths,
                self.settings.state_dir,
            )
        _print_plan(plan, snapshot, self.settings)
        if self.settings.out_file is not None:
            _say_where_the_plan_went(self.settings.out_file, plan, self.settings)

    def confirm(self, plan: Plan) -> None:
        _confirm_destroys(plan, self.settings)


async def _run(
    reconciler: Reconciler,
    settings: _Settings,
    lease: Lease | None,
    environ: Mapping[str, str],
    fence: WriterFence | None = None,
) -> int:
    """One run through the engine's lifecycle; the result becomes output and an exit code."""
    saved = _read_plan(settings.plan_file) if settings.plan_file is not None else None
    request = RunRequest(
        mode="dry-run" if settings.dry_run else "apply",
        dry_run=settings.dry_run,
        options=PlanOptions(
            spec_hash=reconciler.spec_hash, allow_mass_destroy=settings.allow_mass_destroy
        ),
        saved=saved,
        # a saved plan made without --allow-mass-destroy may be applied with it
        overridable=frozenset({"mass_delete"}) if settings.allow_mass_destroy else frozenset(),
        epoch=lease.epoch if lease is not None else None,
        actor=cli_actor(),
    )
    with _progress(settings) as progress:
        hooks = _CliHooks(
            settings,
            before_mutation=None if settings.dry_run else _kill_hook(environ),
            progress=progress,
            fence=fence,
        )
        result = await reconciler.reconcile(request, hooks)
    if result.error is not None:
        raise result.error
    plan = result.plan
    assert plan is not None
    # changes remain: a plan with changes, or nothing to do now while the fleet is not what
    # the spec says yet (a stopped server, a failed slot, deferred work: issue 9)
    remaining = not plan.is_empty or bool(plan.unsettled)
    if settings.dry_run:
        if settings.detailed and remaining:
            return EXIT_CHANGES
        return EXIT_OK
    report = result.report
    assert report is not None
    if not plan.is_empty:
        _echo_info(settings)(render_report(report))
    if report.failed or report.skipped:
        return EXIT_ERROR  # the next run retries; waiting would not mend a failed change
    if not settings.wait or not _unconverged(result):
        return EXIT_CHANGES if settings.detailed and remaining else EXIT_OK
    convergence = await _wait(reconciler, request, settings, environ, fence)
    if not convergence.converged:
        _say_not_converged(convergence, settings)
    return EXIT_CHANGES if settings.detailed and not plan.is_empty else EXIT_OK


def _unconverged(result: RunResult) -> bool:
    """Whether the run left anything to wait for (the same test as the wait's)."""
    if result.plan is None or result.snapshot is None:
        return False
    report = result.report
    if report is not None and report.outcomes:
        return True  # the world changed: observe it again
    return bool(remaining_work(result.plan, result.snapshot.recorded))


async def _wait(
    reconciler: Reconciler,
    request: RunRequest,
    settings: _Settings,
    environ: Mapping[str, str],
    fence: WriterFence | None,
) -> Convergence:
    """``--wait``: observe (and apply follow-up runs) until the fleet converges."""
    info = _echo_info(settings)
    shown = _duration_text(settings.timeout)

    def waiting(remaining: tuple[str, ...]) -> None:
        info(
            f"waiting for the fleet to converge (up to {shown}, --no-wait not to): "
            f"{len(remaining)} left"
        )
        for line in remaining[:10]:
            info(f"  - {line}")
        if len(remaining) > 10:
            info(f"  - ... and {len(remaining) - 10} more")

    def hooks() -> RunHooks:
        # plain progress lines: a follow-up run is one of several in this wait
        return _FollowUpHooks(
            settings,
            before_mutation=_kill_hook(environ),
            progress=PlainProgress(info),
            fence=fence,
        )

    convergence = await wait_for_convergence(
        reconciler, request, timeout=settings.timeout, hooks=hooks, on_wait=waiting
    )
    for run in convergence.runs:
        if run.report is not None and run.report.outcomes:
            info(render_report(run.report))
    if convergence.converged:
        waited = _duration_text(convergence.waited)
        info(f"converged: fleet {reconciler.fleet} matches the spec (waited {waited}).")
    return convergence


def _say_not_converged(convergence: Convergence, settings: _Settings) -> None:
    """Why the fleet did not converge, what remains and what the next run does; raises
    ``NotConvergedError`` (exit 1)."""
    why = {
        WaitEnd.TIMEOUT: f"not within {_duration_text(settings.timeout)}",
        WaitEnd.OPERATOR: "waiting cannot help: an operator has to act",
        WaitEnd.FAILED: "a follow-up run did not succeed",
        WaitEnd.NEW_PLAN: "the saved plan is applied; what remains is a new plan to review",
    }.get(convergence.end, convergence.end.value)
    if convergence.error is not None:
        why += f" ({convergence.error})"
    for line in ("remaining:", *(f"  - {r}" for r in convergence.remaining)):
        click.echo(line, err=True)
    if convergence.next_run:
        click.echo("the next run:", err=True)
        for line in convergence.next_run:
            click.echo(f"  - {line}", err=True)
    hint = (
        "review it with `reconcile --dry-run`"
        if convergence.end is WaitEnd.NEW_PLAN
        else "run `reconcile` again later (or let the daemon do it), or wait longer with "
        "--timeout; `reconcile --dry-run` shows what is left"
    )
    raise NotConvergedError(f"the fleet did not converge: {why}", hint=hint)


def _duration_text(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest:02d}s" if rest else f"{minutes}m"


class _FollowUpHooks(_CliHooks):
    """A follow-up run while waiting: its plan is shown as text on the info stream (the first
    plan alone goes to --out and to a JSON or Markdown stdout); destroys are confirmed as
    usual."""

    def planned(self, plan: Plan, snapshot: Snapshot) -> None:
        info = _echo_info(self.settings)
        info("a follow-up run while waiting applies:")
        info(render_plan(plan, color=self.settings.color).rstrip("\n"))


def _confirm_destroys(plan: Plan, settings: _Settings) -> None:
    destroys = [c for c in plan.changes if c.action is Action.DESTROY]
    if not destroys or settings.yes:
        return
    noun = "server" if len(destroys) == 1 else "servers"
    question = f"This plan destroys {len(destroys)} {noun}. Apply it?"
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise ConfirmationRequiredError(
            f"the plan destroys {len(destroys)} {noun} and there is no terminal to confirm it",
            hint="review the plan with --dry-run, then re-run with --yes",
        )
    if not click.confirm(question, default=False):
        raise ConfirmationRequiredError(
            "not confirmed: nothing was changed", hint="re-run with --yes to skip the question"
        )


@contextlib.contextmanager
def _progress(settings: _Settings) -> Iterator[ProgressHooks]:
    if settings.color:
        with BarProgress() as bar:
            yield bar
        return
    plain: ProgressHooks = PlainProgress(_echo_info(settings))
    yield plain


def _kill_hook(environ: Mapping[str, str]) -> Callable[[], None] | None:
    raw = (environ.get(KILL_ENV) or "").strip()
    if not raw:
        return None
    try:
        target = int(raw)
    except ValueError:
        raise UserError(f"{KILL_ENV} must be an integer, got {raw!r}") from None
    count = 0

    def hook() -> None:
        nonlocal count
        count += 1
        if count >= target:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


@contextlib.asynccontextmanager
async def _writer_lock(
    store: StorePort, reconciler: Reconciler, environ: Mapping[str, str]
) -> AsyncIterator[tuple[Lease, WriterFence]]:
    """One writer at a time: the store lock named after the fleet (its epoch fences every
    write), renewed while held, and the fence of the apply (design §3c): before every mutating
    request (after its rate-limit token) the lock is renewed in the store and must still carry
    this run's epoch; a lock lost (taken over, or not renewed within its lease on this
    process's monotonic clock) cancels the apply in flight."""
    try:
        ttl = float(environ.get(LOCK_TTL_ENV) or DEFAULT_LOCK_TTL)
    except ValueError:
        raise UserError(f"{LOCK_TTL_ENV} must be a number of seconds") from None
    name = lock_name(reconciler.fleet)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    lease = store.acquire_lock(name, owner, ttl, reconciler.clock.now())
    renewed = time.monotonic()

    def still_mine() -> None:
        nonlocal renewed
        try:
            again = store.acquire_lock(name, owner, ttl, reconciler.clock.now())
        except LockHeldError as exc:
            raise LeadershipLostError(f"the writer lock {name!r} was taken over: {exc}") from None
        if again.epoch != lease.epoch:
            raise LeadershipLostError(
                f"the writer lock {name!r} was lost (epoch {lease.epoch}, now {again.epoch})"
            )
        renewed = time.monotonic()

    fence = WriterFence(still_mine, held=lambda: time.monotonic() - renewed < ttl)

    async def renew() -> None:
        while not fence.lost:
            await asyncio.sleep(ttl / 3)
            try:
                still_mine()
            except LeadershipLostError as exc:
                fence.lose(str(exc))
            except StoreError:
                pass  # the store is unreachable: the lease runs out on our own clock

    renewing = asyncio.create_task(renew())
    try:
        yield lease, fence
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        store.release_lock(lease)


# --- plan files and printing -------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600, also when it existed): a
    plan names the fleet's servers, addresses and journal."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def _write_plan(
    path: Path,
    plan: Plan,
    fingerprint: str,
    spec_paths: tuple[str, ...] = (),
    state_dir: str | None = None,
) -> None:
    from reconciler.views.documents import plan_to_document  # only with --out (issue 14)

    document = plan_to_document(
        plan, fingerprint=fingerprint, spec_paths=spec_paths, state_dir=state_dir
    )
    document[DIGEST_KEY] = plan_digest(document)
    try:
        _write_private(path, json.dumps(document, indent=2, sort_keys=False) + "\n")
    except OSError as exc:
        raise PlanFileError(
            f"cannot write the plan to {path}: {exc.strerror or exc}",
            hint="check that the directory exists and is writable",
        ) from exc


def _say_where_the_plan_went(path: Path, plan: Plan, settings: _Settings) -> None:
    """After ``--out``: where the plan is and the command that applies exactly it."""
    count = len(plan.changes)
    what = "no changes" if count == 0 else f"{count} change{'s' if count != 1 else ''}"
    click.echo(
        f"Saved the plan ({what}) to {path}. To apply exactly this plan (refused if the spec, "
        f"the store or the cloud changed since): reconcile --plan {shlex.quote(str(path))}",
        err=True,
    )


def _state_dir_of_plan(path: Path) -> str | None:
    """The state folder a saved plan names, if it still exists."""
    from reconciler.views.documents import state_dir_of

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # _read_plan reports it properly
    made_in = state_dir_of(document)
    return made_in if made_in is not None and Path(made_in).is_dir() else None


def _spec_paths_of_plan(path: Path) -> tuple[str, ...]:
    """The spec paths a saved plan names; each must still exist."""
    from reconciler.views.documents import spec_paths_of

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ()  # _read_plan reports it properly
    paths = tuple(spec_paths_of(document))
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise PlanFileError(
            f"{path} was made from {', '.join(missing)}, which no longer exist",
            hint="pass the spec with -f PATH",
        )
    return paths


def _read_plan(path: Path) -> SavedPlan:
    """Read a saved plan; whether it still applies is the engine's check (StalePlanError)."""
    from reconciler.views.documents import plan_from_document

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanFileError(
            f"cannot read the plan file {path}: {exc.strerror or exc}",
            hint="make one with `reconcile --dry-run --out PLANFILE`",
        ) from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(
            f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}",
            hint="make one with `reconcile --dry-run --out PLANFILE`",
        ) from exc
    if isinstance(document, dict):
        digest = document.pop(DIGEST_KEY, None)
        if digest is None:
            raise PlanFileError(
                f"{path} carries no digest: it cannot be checked for edits",
                hint="make a fresh plan with `reconcile --dry-run --out PLANFILE` and review it",
            )
        if digest != plan_digest(document):
            raise PlanFileError(
                f"{path} was changed after it was made (its digest does not match its "
                "content): an edited plan is never applied",
                hint="make a fresh plan with `reconcile --dry-run --out PLANFILE` and review it",
            )
    plan, fingerprint = plan_from_document(document)
    return SavedPlan(plan, fingerprint, source=str(path))


#: a saved plan's digest of its own content (issue 9): an edited plan is refused
DIGEST_KEY = "digest"


def plan_digest(document: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the document's canonical JSON, the digest itself left out."""
    body = {k: v for k, v in document.items() if k != DIGEST_KEY}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _print_plan(plan: Plan, snapshot: Snapshot, settings: _Settings) -> None:
    if settings.output == "json":
        from reconciler.views.documents import plan_to_document

        document = plan_to_document(plan, fingerprint=snapshot.fingerprint)
        click.echo(json.dumps(document, indent=2))
    elif settings.output == "markdown":
        click.echo(render_markdown(plan), nl=False)
    else:
        click.echo(render_plan(plan, color=settings.color), nl=False)
