"""The rows both sides read: one organization, users with findings, and teams (the fan-out)."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from emailevents import metadata as engine_tables

from .models import Base, Finding, Organization, Team, User


@dataclass(frozen=True)
class World:
    org: str
    actor: str
    findings: list[str]
    """CUIDs of findings, each owned by a different user: one email each."""
    teams: dict[int, str]
    """Team size -> the CUID of a team of that many members."""

    def finding_args(self, i: int) -> dict[str, str]:
        return {
            "user": self.actor,
            "org": self.org,
            "finding": self.findings[i % len(self.findings)],
        }

    def team_args(self, size: int) -> dict[str, str]:
        return {"user": self.actor, "org": self.org, "team": self.teams[size]}


def create(engine: sa.Engine, *, findings: int, team_sizes: list[int]) -> World:
    """Create the tables (the application's and the engine's) and seed them."""
    Base.metadata.create_all(engine)
    engine_tables.create_all(engine)
    org = "corg000000000000000000000"
    users: list[dict[str, object]] = []
    teams: list[dict[str, object]] = []
    rows: list[dict[str, object]] = []
    user_id = 0

    def user(team_id: int | None) -> int:
        nonlocal user_id
        user_id += 1
        users.append(
            {
                "id": user_id,
                "cuid": f"cusr{user_id:021d}",
                "email": f"user{user_id}@acme.test",
                "full_name": f"User Number {user_id}",
                "team_id": team_id,
            }
        )
        return user_id

    actor = user(None)
    for i in range(findings):
        owner = user(None)
        rows.append(
            {
                "id": i + 1,
                "cuid": f"cfnd{i + 1:021d}",
                "title": f"Finding {i + 1}: drift above threshold",
                "owner_id": owner,
            }
        )
    team_cuids: dict[int, str] = {}
    for n, size in enumerate(sorted(set(team_sizes)), start=1):
        cuid = f"ctem{n:021d}"
        teams.append({"id": n, "cuid": cuid, "name": f"Team of {size}"})
        team_cuids[size] = cuid
        for _ in range(size):
            user(n)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(Organization),
            [{"id": 1, "cuid": org, "name": "Acme Model Risk", "slug": "acme"}],
        )
        conn.execute(sa.insert(Team), teams) if teams else None
        conn.execute(sa.insert(User), users)
        conn.execute(sa.insert(Finding), rows) if rows else None
        if conn.dialect.name == "postgresql":  # ids were given: move the sequences past them
            for table in (Organization, Team, User, Finding):
                name = table.__tablename__
                conn.execute(
                    sa.text(
                        f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                        f"(SELECT coalesce(max(id), 0) + 1 FROM {name}), false)"
                    )
                )
    return World(
        org=org,
        actor=f"cusr{actor:021d}",
        findings=[str(r["cuid"]) for r in rows],
        teams=team_cuids,
    )
