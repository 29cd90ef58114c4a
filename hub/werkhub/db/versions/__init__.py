"""Alembic migrations of the werkhub service database, one module per revision, applied in
order by ``werkhub.db`` at start-up; each imports only alembic and sqlalchemy."""
