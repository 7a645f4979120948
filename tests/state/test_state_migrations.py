"""Alembic migrations on both engines, schema == models, opening rules, `reconcile db`."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from reconciler.cli.main import main
from reconciler.core.errors import StoreUnavailableError
from state import SchemaOutOfDateError, open_store, sessions
from state import models as m

MODEL_TABLES = {t.name for t in m.Base.metadata.sorted_tables}


def _tables(url: str) -> set[str]:
    engine = sessions.make_engine(sessions.resolve_url(url), pool=False)
    try:
        with engine.connect() as connection:
            return set(sa.inspect(connection).get_table_names())
    finally:
        engine.dispose()


def _diffs(url: str) -> list[object]:
    engine = sessions.make_engine(sessions.resolve_url(url), pool=False)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, m.Base.metadata))
    finally:
        engine.dispose()


def test_upgrade_matches_the_models_and_downgrade_drops_everything(database_url: str) -> None:
    status = sessions.upgrade(database_url)
    assert status.is_head
    assert status.current == sessions.head_revision()
    assert _tables(database_url) == MODEL_TABLES | {"alembic_version"}
    assert _diffs(database_url) == []
    status = sessions.downgrade(database_url, "base")
    assert status.current is None
    assert status.empty
    assert _tables(database_url) - {"alembic_version"} == set()
    # and up again, cleanly
    assert sessions.upgrade(database_url).is_head
    assert _diffs(database_url) == []


def test_open_store_upgrades_only_an_empty_embedded_database(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        store = open_store(database_url)  # empty embedded: migrated by itself
        store.close()
        assert sessions.schema_status(database_url).is_head
    else:
        with pytest.raises(SchemaOutOfDateError) as info:
            open_store(database_url)
        assert info.value.hint == "run: reconcile db upgrade"
        assert "is empty" in info.value.message
        sessions.upgrade(database_url)
        open_store(database_url).close()


def test_a_first_upgrade_cut_short_is_finished_but_a_used_database_is_refused(
    tmp_path: Path,
) -> None:
    """A kill during the first run's migration leaves the embedded database behind head with
    no row in it: the next run finishes the upgrade (found by the SIGKILL provisioning test).
    One that holds anything is still refused."""
    cut = f"sqlite:///{tmp_path}/cut.db"
    sessions.upgrade(cut, revision="0002_node_steps")
    open_store(cut).close()
    assert sessions.schema_status(cut).is_head
    used = f"sqlite:///{tmp_path}/used.db"
    sessions.upgrade(used, revision="0002_node_steps")
    engine = sa.create_engine(used)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE operator_notes (note TEXT)"))
        connection.execute(sa.text("INSERT INTO operator_notes VALUES ('kept')"))
    engine.dispose()
    with pytest.raises(SchemaOutOfDateError, match="revision 0002_node_steps") as info:
        open_store(used)
    assert info.value.hint == "run: reconcile db upgrade"


def test_upgrade_false_never_migrates(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    with pytest.raises(SchemaOutOfDateError, match="needs revision"):
        open_store(url, upgrade=False)
    assert _tables(url) - {"alembic_version"} == set()


def test_default_url_is_an_sqlite_file_under_dot_reconciler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store(environ={})
    try:
        assert store.url == "sqlite:///.reconciler/state.db"
    finally:
        store.close()
    assert (tmp_path / ".reconciler" / "state.db").is_file()


def test_url_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/nested/dir/env.db"
    store = open_store(environ={sessions.ENV_VAR: url})
    store.close()
    assert (tmp_path / "nested" / "dir" / "env.db").is_file()


def test_postgresql_urls_use_psycopg() -> None:
    url = sessions.resolve_url("postgresql://u:pw@db.internal/fleet")
    assert url.drivername == "postgresql+psycopg"
    assert sessions.render_url(url) == "postgresql+psycopg://u:***@db.internal/fleet"


def test_unreachable_database_is_reported_without_password() -> None:
    with pytest.raises(StoreUnavailableError) as info:
        open_store("postgresql://fleet:s3cr3t-pw@127.0.0.1:1/fleet")
    assert "s3cr3t-pw" not in info.value.message
    assert "fleet:***@127.0.0.1:1" in info.value.message
    assert info.value.hint


def test_db_commands(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "current", "--url", database_url]) == 0
    assert "no revision" in capsys.readouterr().out
    assert main(["db", "upgrade", "--url", database_url]) == 0
    assert "(head)" in capsys.readouterr().out
    assert main(["db", "current", "--url", database_url]) == 0
    assert f"{sessions.head_revision()} (head)" in capsys.readouterr().out
    assert main(["db", "downgrade", "base", "--url", database_url, "--yes"]) == 0
    assert "downgraded to no revision" in capsys.readouterr().out
    assert main(["db", "upgrade", "--url", database_url, "--revision", "nope"]) == 1
    err = capsys.readouterr().err
    assert "Can't locate revision" in err
    assert "Traceback" not in err


def test_db_command_against_an_unreachable_database(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["db", "upgrade", "--url", "postgresql://u:hunter2@127.0.0.1:1/x"])
    err = capsys.readouterr().err
    assert code == 1
    assert "cannot reach the state database" in err
    assert "hint:" in err
    assert "hunter2" not in err
    assert "Traceback" not in err


def test_downgrade_asks_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    sessions.upgrade(url)
    assert main(["db", "downgrade", "base", "--url", url]) == 1  # no terminal: not confirmed
    assert "pass --yes" in capsys.readouterr().err
    assert sessions.schema_status(url).is_head


# --- the check at every opening, without Alembic (issue 14) ---------------------------------


def test_the_declared_head_is_alembics_head() -> None:
    assert sessions.declared_head() == sessions.head_revision()


def test_opening_a_store_at_head_does_not_import_alembic(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'state.db'}"
    open_store(url, upgrade=True).close()
    probe = (
        "import json, sys\n"
        "from state.store import open_store\n"
        f"open_store({url!r}).close()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    modules = json.loads(done.stdout.strip().splitlines()[-1])
    assert not [name for name in modules if name.split(".")[0] == "alembic"]


def test_a_database_behind_head_is_still_refused_without_alembic_at_hand(
    database_url: str,
) -> None:
    sessions.upgrade(database_url, revision="0001_initial")
    with pytest.raises(SchemaOutOfDateError, match="revision 0001_initial"):
        open_store(database_url, upgrade=False)


def test_a_database_with_a_foreign_revision_is_refused(database_url: str) -> None:
    sessions.upgrade(database_url)
    engine = sessions.make_engine(sessions.resolve_url(database_url), pool=False)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("UPDATE alembic_version SET version_num = 'zz_other'"))
    finally:
        engine.dispose()
    with pytest.raises(SchemaOutOfDateError, match="zz_other"):
        open_store(database_url, upgrade=False)


def test_declared_head_gives_up_on_a_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "0001_a.py").write_text('revision: str = "a"\ndown_revision: str | None = None\n')
    (versions / "0002_b.py").write_text('revision: str = "b"\ndown_revision: str | None = "a"\n')
    (versions / "0003_c.py").write_text('revision: str = "c"\ndown_revision: str | None = "a"\n')
    monkeypatch.setattr(sessions, "MIGRATIONS_DIR", tmp_path)
    sessions.declared_head.cache_clear()
    try:
        assert sessions.declared_head() is None  # two heads: Alembic decides
        (versions / "0003_c.py").write_text('revision: str = "c"\ndown_revision = ("a", "b")\n')
        sessions.declared_head.cache_clear()
        assert sessions.declared_head() is None  # a merge: Alembic decides
        (versions / "0003_c.py").write_text(
            'revision: str = "c"\ndown_revision: str | None = "b"\n'
        )
        sessions.declared_head.cache_clear()
        assert sessions.declared_head() == "c"
    finally:
        sessions.declared_head.cache_clear()
