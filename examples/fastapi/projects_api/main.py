"""The web application, its Celery app, and the email events both share.

The tables:       python -m projects_api.init_db
The web process:  uvicorn projects_api.main:app
The worker:       celery -A projects_api.main:celery_app worker --loglevel=INFO

Both import this module, so both create the same ``EmailEvents``: the web process to emit, the
worker to run the tasks it registers on ``celery_app``.
"""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from celery import Celery
from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import create_engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from emailevents import EmailEvents, PostmarkSender, emit

from .models import Project, User

DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:///projects.sqlite3")
BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000")

engine = create_engine(DATABASE_URL)
SessionLocal = sessionmaker(engine)

celery_app = Celery("projects_api", broker=BROKER_URL)
if BROKER_URL == "filesystem://":
    # kombu's filesystem transport: each message is a file in ./broker, no server to run. For
    # development on one machine; set CELERY_BROKER_URL (Redis, RabbitMQ) for anything else.
    Path("broker").mkdir(exist_ok=True)
    celery_app.conf.broker_transport_options = {
        "data_folder_in": "broker",
        "data_folder_out": "broker",
        "control_folder": "broker/control",
        "polling_interval": 0.1,
    }

events = EmailEvents(
    Path(__file__).parent.parent / "events.yaml",
    celery=celery_app,
    session_factory=SessionLocal,
    # POSTMARK_SERVER_TOKEN and POSTMARK_API_URL say where mail goes. Only the worker sends, so
    # only the worker needs the token.
    sender=PostmarkSender(),
    context={"site_url": SITE_URL},
)


app = FastAPI(title="Acme projects")


def get_session() -> Iterator[Session]:
    """One transaction per request: committed when the endpoint returns, rolled back when it
    raises. The emits made with ``session=`` are queued by that commit, or dropped with it."""
    with SessionLocal.begin() as session:
        yield session


# scope="function": commit before the response is sent, so that a failed commit is the client's
# error and a 201 means the project (and its email) is committed. FastAPI's default ends a
# dependency after the response.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def current_user(session: SessionDep, x_user: Annotated[str, Header()]) -> User:
    """Who is asking. Stands in for your authentication: the X-User header names a member."""
    user = session.scalars(select(User).filter_by(email=x_user)).one_or_none()
    if user is None:
        raise HTTPException(status_code=401, detail=f"no user {x_user!r}")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


class NewProject(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    owner: str  # a member's email address


class ProjectOut(BaseModel):
    cuid: str
    name: str
    owner: str

    @classmethod
    def of(cls, project: Project) -> "ProjectOut":
        return cls(cuid=project.cuid, name=project.name, owner=project.owner.email)


@app.post("/projects", status_code=201)
def create_project(new: NewProject, user: CurrentUser, session: SessionDep) -> ProjectOut:
    """Create a project; its owner gets an email once the request's transaction commits."""
    return ProjectOut.of(add_project(session, user, new))


@app.post("/projects/import", status_code=201)
def import_projects(
    projects: list[NewProject], user: CurrentUser, session: SessionDep
) -> list[ProjectOut]:
    """Create several projects, all or none: when one fails, the projects before it roll back
    with the request, and so do their emails."""
    return [ProjectOut.of(add_project(session, user, new)) for new in projects]


def add_project(session: Session, user: User, new: NewProject) -> Project:
    org = user.organization
    owner = session.scalars(
        select(User).filter_by(email=new.owner, organization_id=org.id)
    ).one_or_none()
    if owner is None:
        raise HTTPException(status_code=422, detail=f"{new.owner} is not a member of {org.name}")
    project = Project(name=new.name, organization=org, owner=owner, created_by=user)
    session.add(project)
    try:
        session.flush()  # gives the project its cuid; a name taken already fails here
    except IntegrityError:
        raise HTTPException(status_code=409, detail=f"{new.name!r} exists already") from None
    # Written in this transaction, published to the broker when it commits.
    emit("project_created", user=user.cuid, org=org.cuid, project=project.cuid, session=session)
    return project
