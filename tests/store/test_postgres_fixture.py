"""The store tests' PostgreSQL is a real server: prove it through SQLAlchemy."""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from pg import fresh_database, require_postgres


def test_postgres_is_real() -> None:
    engine = sa.create_engine(fresh_database(require_postgres()))
    try:
        assert engine.dialect.name == "postgresql"
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
            assert conn.execute(sa.text("SELECT version()")).scalar_one().startswith("PostgreSQL")

        table = sa.Table(
            "probe",
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("doc", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
        )
        table.create(engine)
        try:
            with engine.begin() as conn:
                conn.execute(table.insert(), [{"doc": {"n": 1}}, {"doc": {"n": 2}}])
            with engine.connect() as conn:
                # A JSONB operator: SQLite would reject this.
                total = conn.execute(sa.text("SELECT sum((doc->>'n')::int) FROM probe"))
                assert total.scalar_one() == 3
            assert sa.inspect(engine).has_table("probe")
        finally:
            table.drop(engine)
        assert not sa.inspect(engine).has_table("probe")
    finally:
        engine.dispose()


def test_fresh_databases_are_separate_and_empty() -> None:
    server = require_postgres()
    first, second = fresh_database(server), fresh_database(server)
    assert first != second
    engine_a, engine_b = sa.create_engine(first), sa.create_engine(second)
    try:
        with engine_a.begin() as conn:
            conn.execute(sa.text("CREATE TABLE only_in_a (x int)"))
        assert sa.inspect(engine_a).get_table_names() == ["only_in_a"]
        assert sa.inspect(engine_b).get_table_names() == []
    finally:
        engine_a.dispose()
        engine_b.dispose()
