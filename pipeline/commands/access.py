"""`alpr` subcommands: access (users, proxy, audit, release).

Passwords come from a prompt or, with --password-stdin, one per line on stdin;
never from argv. Commands that change something name the acting person with
--user and check their password first: an approval is authenticated, not named.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import click

from alpr.core.errors import AlprError
from alpr.access.login import ADMINISTRATORS, AUDITORS, SUPERVISORS, Session, login, login_options, read_passwords
from alpr.core.settings import settings
from alpr.core.times import parse_when
from alpr.schemas.models import AgencyType, UserRole

COMMANDS: list = []
_ROLES = click.Choice([r.value.lower() for r in UserRole])


def _codec():
    from alpr.schemas import Codec

    return Codec(settings().schema_registry_url)


# --- users

@click.group()
def users() -> None:
    """People who may reach ALPR data (topic alpr.users); every change audited."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=_ROLES, required=True)
@click.option("--agency", required=True, help="The user's agency code.")
@click.option("--trained", "trained", help="Date ALPR training was completed (YYYY-MM-DD); omitted: not trained "
              "(refused for the first administrator, who must be able to log in).")
@click.option("--user", "actor", help="The administrator making the change (omit only for the first administrator, "
              "who is created trained).")
@click.option("--password-stdin", is_flag=True, help="Read passwords from stdin: the administrator's, then the new user's.")
def users_add(name: str, role: str, agency: str, trained: str | None, actor: str | None, password_stdin: bool) -> None:
    """Add a user; the new password is prompted (or read from stdin), never an argument."""
    from alpr.access.users import add_user

    s = Session("users-cli")
    if not actor and (role != "administrator" or not trained):  # before any password is asked
        raise AlprError("only an administrator may add users; without --user only the first administrator is "
                        "added, and with --trained DATE (an untrained administrator could never log in, and "
                        "nobody could record the training)")
    prompts = ([(f"password of {actor}", False)] if actor else []) + [(f"new password for {name}", True)]
    pw = read_passwords(password_stdin, prompts)
    acting = s.login(actor, pw[0], {UserRole.ADMINISTRATOR}) if actor else None
    user = add_user(s.settings, s.codec, s.directory, s.audit, acting, name=name, role=UserRole(role.upper()),
                    agency=agency, password=pw[-1], trained_at=parse_when(trained, '--trained') if trained else None)
    click.echo(json.dumps({"added": user.name, "role": role, "agency": agency,
                           "trained_at": user.trained_at.date().isoformat() if user.trained_at else None}))


def _admin_change(actor: str, password_stdin: bool):
    s = Session("users-cli")
    (pw,) = read_passwords(password_stdin, [(f"password of {actor}", False)])
    return s, s.login(actor, pw, {UserRole.ADMINISTRATOR})


@users.command("disable")
@click.argument("name")
@click.option("--reason", required=True)
@click.option("--user", "actor", required=True, help="The administrator making the change.")
@click.option("--password-stdin", is_flag=True)
def users_disable(name: str, reason: str, actor: str, password_stdin: bool) -> None:
    """Disable an account (it is never deleted)."""
    from alpr.access.users import disable_user

    s, admin = _admin_change(actor, password_stdin)
    disable_user(s.settings, s.codec, s.directory, s.audit, admin, name, reason)
    click.echo(json.dumps({"disabled": name}))


@users.command("enable")
@click.argument("name")
@click.option("--user", "actor", required=True)
@click.option("--password-stdin", is_flag=True)
def users_enable(name: str, actor: str, password_stdin: bool) -> None:
    """Enable a disabled account again."""
    from alpr.access.users import enable_user

    s, admin = _admin_change(actor, password_stdin)
    enable_user(s.settings, s.codec, s.directory, s.audit, admin, name)
    click.echo(json.dumps({"enabled": name}))


@users.command("train")
@click.argument("name")
@click.option("--date", "when", required=True, help="Date the ALPR training (or refresher) was completed.")
@click.option("--user", "actor", required=True)
@click.option("--password-stdin", is_flag=True)
def users_train(name: str, when: str, actor: str, password_stdin: bool) -> None:
    """Record completed ALPR training."""
    from alpr.access.users import record_training

    s, admin = _admin_change(actor, password_stdin)
    record_training(s.settings, s.codec, s.directory, s.audit, admin, name, parse_when(when, '--date'))
    click.echo(json.dumps({"trained": name, "trained_at": when}))


@users.command("unlock")
@click.argument("name")
@click.option("--user", "actor", required=True)
@click.option("--password-stdin", is_flag=True)
def users_unlock(name: str, actor: str, password_stdin: bool) -> None:
    """Clear a lock placed after repeated failed logins."""
    from alpr.access.users import unlock_user

    s, admin = _admin_change(actor, password_stdin)
    unlock_user(s.settings, s.codec, s.directory, s.audit, admin, name)
    click.echo(json.dumps({"unlocked": name}))


@users.command("list")
@login_options
def users_list(actor: str, password_stdin: bool) -> None:
    """One JSON line per user: role, agency, training, state (never the password hash). Administrators."""
    from alpr.access.users import describe_user

    session, _ = login(actor, password_stdin, ADMINISTRATORS, "users-cli")
    for user in session.directory.all():
        click.echo(json.dumps(describe_user(user, session.directory.lockout(user.name), session.settings)))


COMMANDS.append(users)


# --- proxy

@click.command("proxy")
def proxy_cmd() -> None:
    """Serve the gated SQL proxy (ClickHouse HTTP interface) until SIGTERM or Ctrl-C."""
    from alpr.core import kafka
    from alpr.access.proxy import ProxyService
    from alpr.core.store import open_store

    from alpr.core.runtime import ProcessRuntime

    s = settings()
    kafka.check_reachable(s)
    store = open_store(s)
    service = ProxyService(s, store, _codec())
    started = threading.Event()
    # Signals, the shutdown deadline, /metrics, /healthz, /readyz and heartbeats, like every process.
    with ProcessRuntime(s, "proxy", ready=started.is_set) as rt:
        try:
            service.start()
            started.set()
            click.echo(f"proxy listening on {service.url}", err=True)
            while not rt.stop.wait(1.0):
                rt.health.beat()
        finally:
            service.stop()
            store.close()


COMMANDS.append(proxy_cmd)


# --- audit

@click.group()
def audit() -> None:
    """The audit trail: chain verification and the periodic report."""


@audit.command("verify")
@click.option("--topic", default="alpr.audit", show_default=True, help="The audit topic (or a restored copy).")
def audit_verify(topic: str) -> None:
    """Check the hash chain over the whole topic; exit non-zero if it is broken."""
    from alpr.core import kafka
    from alpr.audit.report import verify

    s = settings()
    kafka.check_reachable(s)
    report = verify(s, _codec(), topic)
    click.echo(json.dumps({"ok": report.ok, "events": report.events, "segments": report.segments,
                           "problems": report.problems}))
    if not report.ok:
        raise AlprError(f"audit chain BROKEN: {len(report.problems)} problem(s); first: {report.problems[0]}")


@audit.command("report")
@click.option("--from", "start", required=True, help="First day (YYYY-MM-DD, UTC).")
@click.option("--to", "end", required=True, help="Last day, included.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of text.")
@click.option("--topic", default="alpr.audit", show_default=True)
@login_options
def audit_report(start: str, end: str, as_json: bool, topic: str, actor: str, password_stdin: bool) -> None:
    """The (quarterly) audit: queries, refusals, logins, releases, holds, purges, chain status. Auditors."""
    from alpr.audit.report import build_report, load, period, render_text

    session, _ = login(actor, password_stdin, AUDITORS, "audit-cli")
    lo, hi = period(parse_when(start, '--from').date(), parse_when(end, '--to').date())
    report = build_report(load(session.settings, session.codec, topic), lo, hi)
    click.echo(json.dumps(report) if as_json else render_text(report))


COMMANDS.append(audit)


# --- releases

@click.group()
def release() -> None:
    """Releases to other agencies: written request, supervisor review, scoped export."""


@release.command("request")
@click.option("--user", "actor", required=True, help="Who files the request (analyst or supervisor).")
@click.option("--agency", "requesting_agency", required=True, help="The requesting agency.")
@click.option("--agency-type", type=click.Choice([t.value for t in AgencyType]), required=True)
@click.option("--requester", required=True, help="The person at the requesting agency.")
@click.option("--purpose", required=True)
@click.option("--case", "case_number", required=True)
@click.option("--document", "document_ref", required=True, help="Reference of the written request on file.")
@click.option("--plate", "plates", multiple=True, required=True)
@click.option("--from", "scope_from", required=True, help="Scope start (ISO date/time, UTC if no zone).")
@click.option("--to", "scope_to", required=True, help="Scope end: ISO 8601 with timezone, or a date (UTC, that whole day included).")
@click.option("--password-stdin", is_flag=True)
def release_request(actor, requesting_agency, agency_type, requester, purpose, case_number, document_ref, plates,
                    scope_from, scope_to, password_stdin) -> None:
    """File a written request (routed to records release unless LE or prosecutorial)."""
    from alpr.access.releases import describe, submit

    s = Session("release-cli")
    (pw,) = read_passwords(password_stdin, [(f"password of {actor}", False)])
    user = s.login(actor, pw)
    req = submit(s.settings, s.codec, s.audit, user, requesting_agency=requesting_agency,
                 agency_type=AgencyType(agency_type), requester=requester, purpose=purpose, case_number=case_number,
                 plates=list(plates), scope_from=parse_when(scope_from, '--from'), scope_to=parse_when(scope_to, '--to', 'end'),
                 document_ref=document_ref)
    click.echo(json.dumps(describe(req)))


@release.command("review")
@click.argument("request_id")
@click.option("--user", "actor", required=True, help="The reviewing supervisor (not the submitter).")
@click.option("--approve/--deny", required=True)
@click.option("--reason", required=True)
@click.option("--password-stdin", is_flag=True)
def release_review(request_id: str, actor: str, approve: bool, reason: str, password_stdin: bool) -> None:
    """Approve or deny a pending request, with a reason."""
    from alpr.access.releases import describe, review

    s = Session("release-cli")
    (pw,) = read_passwords(password_stdin, [(f"password of {actor}", False)])
    user = s.login(actor, pw)
    click.echo(json.dumps(describe(review(s.settings, s.codec, s.audit, user, request_id, approve, reason))))


@release.command("export")
@click.argument("request_id")
@click.option("--user", "actor", required=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Folder for packages (default: setting).")
@click.option("--password-stdin", is_flag=True)
def release_export(request_id: str, actor: str, out_dir: Path | None, password_stdin: bool) -> None:
    """Export an approved request's reads (its plates x time range only) with a SHA-256 manifest."""
    from alpr.access.releases import export
    from alpr.warehouse.service import open_store_for_command

    s = Session("release-cli")
    (pw,) = read_passwords(password_stdin, [(f"password of {actor}", False)])
    user = s.login(actor, pw)
    store = open_store_for_command(s.settings)  # embedded: through the running `alpr warehouse` if it has the store
    try:
        result = export(s.settings, s.codec, s.audit, user, store, request_id, out_dir)
    finally:
        store.close()
    if not result.rows:
        click.echo("warning: the package holds no reads: nothing of the approved scope is in the store", err=True)
    click.echo(json.dumps({"exported": request_id, "folder": str(result.folder), "rows": result.rows,
                           "tagmanifest_sha256": result.manifest_sha256}))


@release.command("list")
@click.option("--status", type=click.Choice(["PENDING", "APPROVED", "DENIED", "EXPORTED", "ROUTED_TO_RECORDS"]))
@login_options
def release_list(status: str | None, actor: str, password_stdin: bool) -> None:
    """One JSON line per request (newest version). Supervisors and auditors."""
    from alpr.access.releases import describe, load_requests

    session, _ = login(actor, password_stdin, SUPERVISORS | AUDITORS, "release-cli")
    for req in load_requests(session.settings, session.codec).values():
        if status is None or req.status.value == status:
            click.echo(json.dumps(describe(req)))


COMMANDS.append(release)
