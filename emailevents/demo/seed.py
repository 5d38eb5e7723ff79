"""The demo world: two organizations and one emit for each of the seed team's 11 email events.

``seed(session)`` inserts the world and returns a ``DemoWorld`` of CUIDs; ``emits(world)`` lists
what the demo emits, in order; ``toggles_off(world)`` lists the org email settings it switches off
first. Content is fixed; only the CUIDs differ from run to run.
"""

from dataclasses import dataclass

from sqlalchemy.orm import Session

from emailevents.demo.models import (
    BroadcastNotification,
    InventoryModel,
    Invitation,
    ModelComment,
    ModelFinding,
    ModelStakeholder,
    MonitoringBreach,
    Organization,
    User,
    WorkflowTransition,
)

#: CUID of a finding that does not exist (deleted before the worker ran): its emit is skipped.
MISSING_FINDING_CUID = "c-deleted-finding"

#: How many generated members (``member01@acme.test`` ...) Acme has besides its named users.
ACME_GENERATED_MEMBERS = 25

_FIRST_NAMES = (
    "Alice", "Bruno", "Chen", "Dalia", "Emeka", "Fatima", "Gustav", "Hana", "Ivan", "Jana",
    "Kofi", "Lena", "Mateo", "Nadia", "Oscar", "Pia", "Quentin", "Rosa", "Stefan", "Tara",
    "Umar", "Valentina", "Wei", "Ximena", "Yusuf",
)  # fmt: skip
_LAST_NAMES = (
    "Andersen", "Bianchi", "Castro", "Dubois", "Eze", "Fernandes", "Gruber", "Haddad", "Ivanova",
    "Jensen", "Kowalski", "Lindqvist", "Moreau", "Nowak", "Okonkwo", "Petrov", "Quinn", "Rossi",
    "Schmidt", "Tanaka", "Usman", "Varga", "Wong", "Xu", "Yilmaz",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class DemoWorld:
    """CUIDs of the seeded rows that the demo's emits name.

    Organizations and actors:
        acme_org: "Acme Risk" (slug ``acme``), 31 users: 6 named ones and ``member01..member25``.
        globex_org: "Globex" (slug ``globex``), 3 users; its monitoring toggle is switched off.
        acme_admin: Ada Lovelace, Acme's admin: the actor of most Acme events.
        acme_validator: Vera Nakamura, Acme's validator: raises the finding, writes the comment.
        globex_admin: Hank Scorpio, Globex's admin: the actor of the monitoring breach.

    Event entities (the third CUID of each emit):
        credit_model: Acme's "Retail Credit PD Model" (inventory_model_created, owner Owen Ortiz).
        new_member: Noah Fischer, just added to Acme (organization_user_added).
        removed_stakeholder: Priya Raman's stakeholder row on the credit model (model_user_deleted).
        added_stakeholder: Sam Okafor's stakeholder row on the credit model (model_user_added).
        invitation: Acme's invitation of jordan@partner.test (user_invited).
        finding: the high-severity backtesting finding, owned by Owen Ortiz (model_finding_created).
        comment: Vera's comment on the credit model (model_comment_added; 3 other stakeholders).
        transition_user_action: "In Review" -> "Pending Approval", assigned to Vera
            (workflow_transition_user_action).
        transition_status_set: "Pending Approval" -> "Approved", no assignee; mails the model
            owner (workflow_transition_status_set).
        breach: the PSI breach of Globex's "Churn Propensity Model" (inventory_model_monitoring_
            breach; skipped because Globex switched that toggle off).
        broadcast: Acme's maintenance broadcast (broadcast_notification; 31 recipients).
        missing_finding: a CUID that matches no row (the extra emit, skipped as entity missing).
    """

    acme_org: str
    globex_org: str
    acme_admin: str
    acme_validator: str
    globex_admin: str
    credit_model: str
    new_member: str
    removed_stakeholder: str
    added_stakeholder: str
    invitation: str
    finding: str
    comment: str
    transition_user_action: str
    transition_status_set: str
    breach: str
    broadcast: str
    missing_finding: str = MISSING_FINDING_CUID


def _user(org: Organization, local: str, full_name: str) -> User:
    return User(email=f"{local}@{org.slug}.test", full_name=full_name, organization=org)


def seed(session: Session) -> DemoWorld:
    """Insert the demo world into ``session`` and return the CUIDs the demo emits.

    The rows are flushed, not committed: the caller commits (and may emit with ``session=`` first,
    so that the emits are queued only when the world is committed).
    """
    acme = Organization(name="Acme Risk", slug="acme")
    globex = Organization(name="Globex", slug="globex")

    ada = _user(acme, "ada", "Ada Lovelace")
    owen = _user(acme, "owen", "Owen Ortiz")
    vera = _user(acme, "vera", "Vera Nakamura")
    sam = _user(acme, "sam", "Sam Okafor")
    priya = _user(acme, "priya", "Priya Raman")
    noah = _user(acme, "noah", "Noah Fischer")
    members = [
        _user(acme, f"member{n:02d}", f"{first} {last}")
        for n, (first, last) in enumerate(
            zip(
                _FIRST_NAMES[:ACME_GENERATED_MEMBERS],
                _LAST_NAMES[:ACME_GENERATED_MEMBERS],
                strict=True,
            ),
            start=1,
        )
    ]
    hank = _user(globex, "hank", "Hank Scorpio")
    lisa = _user(globex, "lisa", "Lisa Park")
    marge = _user(globex, "marge", "Marge Bouvier")

    credit = InventoryModel(name="Retail Credit PD Model", organization=acme, owner=owen)
    owner_row = ModelStakeholder(inventory_model=credit, user=owen, role="owner")
    validator_row = ModelStakeholder(inventory_model=credit, user=vera, role="validator")
    removed_row = ModelStakeholder(inventory_model=credit, user=priya, role="reviewer")
    added_row = ModelStakeholder(inventory_model=credit, user=sam, role="developer")

    churn = InventoryModel(name="Churn Propensity Model", organization=globex, owner=lisa)
    globex_rows = [
        ModelStakeholder(inventory_model=churn, user=lisa, role="owner"),
        ModelStakeholder(inventory_model=churn, user=marge, role="monitoring"),
    ]

    invitation = Invitation(
        email="jordan@partner.test", organization=acme, invited_by=ada, role="validator"
    )
    finding = ModelFinding(
        title="PD backtest does not cover the 2025 default cohort",
        severity="high",
        inventory_model=credit,
        owner=owen,
    )
    comment = ModelComment(
        body="The calibration section should cite the 2025 backtest before we sign off.",
        section="Calibration",
        inventory_model=credit,
        author=vera,
    )
    to_approval = WorkflowTransition(
        inventory_model=credit,
        from_status="In Review",
        to_status="Pending Approval",
        action="Request approval",
        assignee=vera,
    )
    approved = WorkflowTransition(
        inventory_model=credit,
        from_status="Pending Approval",
        to_status="Approved",
        action="Approve",
        assignee=None,
    )
    breach = MonitoringBreach(
        inventory_model=churn, metric="population_stability_index", threshold=0.2, observed=0.31
    )
    broadcast = BroadcastNotification(
        organization=acme,
        title="Model inventory maintenance on Saturday",
        body="The model inventory is read-only on Saturday from 08:00 to 10:00 UTC.",
    )

    session.add_all(
        [
            acme, globex, ada, owen, vera, sam, priya, noah, *members, hank, lisa, marge,
            credit, owner_row, validator_row, removed_row, added_row, churn, *globex_rows,
            invitation, finding, comment, to_approval, approved, breach, broadcast,
        ]
    )  # fmt: skip
    session.flush()

    return DemoWorld(
        acme_org=acme.cuid,
        globex_org=globex.cuid,
        acme_admin=ada.cuid,
        acme_validator=vera.cuid,
        globex_admin=hank.cuid,
        credit_model=credit.cuid,
        new_member=noah.cuid,
        removed_stakeholder=removed_row.cuid,
        added_stakeholder=added_row.cuid,
        invitation=invitation.cuid,
        finding=finding.cuid,
        comment=comment.cuid,
        transition_user_action=to_approval.cuid,
        transition_status_set=approved.cuid,
        breach=breach.cuid,
        broadcast=broadcast.cuid,
    )


#: What ``emits`` adds to one emit per event, in words.
EXTRA_EMITS = "model_finding_created once more, for a finding deleted before the worker ran"


def emits(world: DemoWorld) -> list[tuple[str, dict[str, str]]]:
    """Return the demo's emits in order: one per seed event, then one whose finding is missing."""
    acme = {"user": world.acme_admin, "org": world.acme_org}
    by_validator = {"user": world.acme_validator, "org": world.acme_org}
    return [
        ("inventory_model_created", {**acme, "inventory_model": world.credit_model}),
        ("organization_user_added", {**acme, "member": world.new_member}),
        ("model_user_deleted", {**acme, "stakeholder": world.removed_stakeholder}),
        ("model_user_added", {**acme, "stakeholder": world.added_stakeholder}),
        ("user_invited", {**acme, "invitation": world.invitation}),
        ("model_finding_created", {**by_validator, "finding": world.finding}),
        ("model_comment_added", {**by_validator, "comment": world.comment}),
        ("workflow_transition_user_action", {**acme, "transition": world.transition_user_action}),
        ("workflow_transition_status_set", {**acme, "transition": world.transition_status_set}),
        (
            "inventory_model_monitoring_breach",
            {"user": world.globex_admin, "org": world.globex_org, "breach": world.breach},
        ),
        ("broadcast_notification", {**acme, "broadcast": world.broadcast}),
        ("model_finding_created", {**by_validator, "finding": world.missing_finding}),
    ]


def toggles_off(world: DemoWorld) -> list[tuple[str, str]]:
    """Return the (org CUID, toggle key) settings the demo switches off before emitting."""
    return [(world.globex_org, "inventory_model_monitoring_breach")]


__all__ = [
    "ACME_GENERATED_MEMBERS",
    "EXTRA_EMITS",
    "MISSING_FINDING_CUID",
    "DemoWorld",
    "emits",
    "seed",
    "toggles_off",
]
