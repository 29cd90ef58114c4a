"""Alembic environment: runs the werkhub migrations against the configured URL."""

from alembic import context
from sqlalchemy import create_engine

from werkhub.booking.tables import metadata

config = context.config
url = config.get_main_option("sqlalchemy.url")
engine = create_engine(url)
with engine.connect() as connection:
    # JupyterHub keeps its own alembic_version table when it shares the database
    context.configure(
        connection=connection, target_metadata=metadata, version_table="werkhub_alembic_version"
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
