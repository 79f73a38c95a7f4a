"""Hold a PostgreSQL table against writes, so a test can stop a run inside a transaction."""

from __future__ import annotations


class TableWriteLock:
    """Another PostgreSQL session holding ``table`` in EXCLUSIVE mode: reads and every other
    table go on, writes to it wait behind the lock (as they would behind a long batch job). So
    a test can hold a run exactly inside the step that writes it (a posting, a reversal, a tool
    call) while the audit trail is still written. ``release`` (or leaving the ``with`` block)
    lets the writes through."""

    def __init__(self, database_url: str, table: str) -> None:
        import psycopg

        self.conn = psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql"))
        self.conn.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()

    def __enter__(self) -> TableWriteLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
