"""The Alembic environment ``emailevents db`` runs: our tables only, our own version table."""

from alembic import context

from emailevents.errors import ConfigurationError
from emailevents.schema import VERSION_TABLE, ours
from emailevents.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise ConfigurationError(
        "emailevents' migrations run through `emailevents db upgrade`, or from your own Alembic "
        "environment with emailevents:migrations/versions in its version_locations "
        "(docs/migrations.md)"
    )
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    include_name=ours,
    render_as_batch=True,  # SQLite alters a table by copying it
)
with context.begin_transaction():
    context.run_migrations()
