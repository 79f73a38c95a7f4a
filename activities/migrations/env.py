"""Alembic's environment for Baton's schema (run by activities/schema.py, or by ``alembic``).

activities/schema.py hands in an open connection (``config.attributes["connection"]``) so the
migration runs in the caller's transaction, under its lock; the ``alembic`` command line (with
``sqlalchemy.url`` set) gets a connection of its own. SQLite runs in batch mode: it cannot
alter a column in place, so a changed table is copied, which keeps its rows.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from activities.schema import model_metadata

config = context.config
target_metadata = model_metadata()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=False,
        on_version_apply=config.attributes.get("on_version_apply"),
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
