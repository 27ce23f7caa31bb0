"""Alembic environment of the teaching app: run programmatically by :func:`phenosynth.edu.db.migrate` with a
connection in ``config.attributes["connection"]`` (no alembic.ini; never a URL from a file)."""

from __future__ import annotations

from alembic import context

from phenosynth.edu.db import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Run the teaching app's migrations through phenosynth.edu.db.migrate(engine).")

context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
with context.begin_transaction():
    context.run_migrations()
