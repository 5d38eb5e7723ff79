"""Creates the tables, with Acme and two members to try the API with.

    python -m projects_api.init_db

For the example: a real application runs its migrations instead, Alembic for its own tables and
``emailevents db upgrade --app projects_api.main:events`` for emailevents' (docs/migrations.md).
"""

from sqlalchemy import select

from .main import SessionLocal, engine, events
from .models import Base, Organization, User


def init_db() -> None:
    Base.metadata.create_all(engine)
    events.create_tables(engine)
    with SessionLocal.begin() as session:
        if session.scalars(select(Organization)).first() is None:
            acme = Organization(name="Acme", slug="acme")
            session.add_all(
                [
                    User(email="ada@acme.test", full_name="Ada Lovelace", organization=acme),
                    User(email="owen@acme.test", full_name="Owen Ortiz", organization=acme),
                ]
            )


if __name__ == "__main__":
    init_db()
    print("created the tables, and Acme with ada@acme.test and owen@acme.test")  # noqa: T201
