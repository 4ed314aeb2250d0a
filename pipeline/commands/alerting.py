"""`alpr` subcommands: alerting (hotlists, partial plates, the alert topology and its operator view)."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from alpr.access.login import ANALYSTS, login, login_options
from alpr.core.settings import settings

SOURCES = click.Choice(["STATE", "FEDERAL", "LOCAL"], case_sensitive=False)


def _entry_json(e) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime) else getattr(v, "value", v))
            for k, v in e.model_dump().items()}


@click.group("hotlist")
def hotlist_cmd() -> None:
    """Plates to alert on (compacted topic alpr.hotlist, keyed STATE:PLATE)."""


@hotlist_cmd.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--source", type=SOURCES, required=True, help="Which list the extract is; its entries missing "
              "from the file are removed.")
@login_options
@click.option("--skip-bad", is_flag=True, help="Import the good rows and report the malformed ones.")
@click.option("--allow-empty", is_flag=True, help="Allow a file with no valid rows to empty that source's list.")
def hotlist_import(file: Path, source: str, actor: str, password_stdin: bool, skip_bad: bool,
                   allow_empty: bool) -> None:
    """Load a CSV extract (plate,state,reason,source,case_number,expires) and publish only the difference."""
    from alpr.alerting import hotlist

    session, who = login(actor, password_stdin, ANALYSTS, "hotlist")
    result = hotlist.import_csv(session.settings, session.codec, file, source=source.upper(), user=who.name,
                                skip_bad=skip_bad, allow_empty=allow_empty, audit=session.audit,
                                agency=who.agency)
    click.echo(json.dumps(result.summary()))
    if result.kept_removed:
        click.echo(f"note: {len(result.kept_removed)} row(s) stay off the list because they were removed locally: "
                   + ", ".join(result.kept_removed[:20]), err=True)
    if result.overridden:
        click.echo(f"warning: this extract changed {len(result.overridden)} locally removed entr(y/ies), which are "
                   "back on the list: " + ", ".join(result.overridden[:20]), err=True)


@hotlist_cmd.command("add")
@click.argument("plate")
@click.option("--state", required=True, help="Issuing state, e.g. CA.")
@click.option("--reason", required=True, help="STOLEN_VEHICLE, STOLEN_PLATE, WANTED_PERSON, MISSING_PERSON, "
              "AMBER_ALERT, WARRANT or OTHER.")
@click.option("--source", type=SOURCES, default="LOCAL", show_default=True)
@click.option("--case", "case_number", required=True, help="Case or event number.")
@click.option("--expires", default="", help="YYYY-MM-DD (through that day, UTC; shown as entered) or an ISO "
              "date-time with its zone; empty: no expiry.")
@click.option("--notes", default=None)
@login_options
def hotlist_add(plate, state, reason, source, case_number, expires, notes, actor, password_stdin) -> None:
    """Add or replace one hotlist entry."""
    from alpr.alerting import hotlist
    from alpr.alerting.partials import BadInput

    session, who = login(actor, password_stdin, ANALYSTS, "hotlist")
    try:
        entry = hotlist.make_entry(plate=plate, state=state, reason=reason, source=source,
                                   case_number=case_number, expires=expires, agency=who.agency, user=who.name,
                                   notes=notes)
    except ValueError as exc:
        raise BadInput(str(exc).splitlines()[0]) from None
    what = hotlist.add(session.settings, session.codec, entry, audit=session.audit)
    click.echo(json.dumps({"result": what, "key": entry.key}))


@hotlist_cmd.command("remove")
@click.argument("plate")
@click.option("--state", required=True)
@click.option("--reason", required=True, help="Why it is removed (audited).")
@login_options
def hotlist_remove(plate, state, reason, actor, password_stdin) -> None:
    """Remove one hotlist entry (publishes a tombstone)."""
    from alpr.alerting import hotlist
    from alpr.schemas import normalize_plate

    session, who = login(actor, password_stdin, ANALYSTS, "hotlist")
    key = f"{state.strip().upper()}:{normalize_plate(plate)}"
    removed = hotlist.remove(session.settings, session.codec, key=key, user=who.name, reason=reason,
                             audit=session.audit, agency=who.agency)
    click.echo(json.dumps({"result": "removed", "key": key, "source": removed.entry.source.value,
                           "remembered": removed.remembered}))
    if removed.warning:
        click.echo(f"warning: {removed.warning}", err=True)


@hotlist_cmd.command("list")
@click.option("--source", type=SOURCES, default=None)
@login_options
def hotlist_list(source, actor, password_stdin) -> None:
    """Print the current hotlist as JSON lines."""
    from alpr.alerting import hotlist

    session, who = login(actor, password_stdin, ANALYSTS, "hotlist")
    s = session.settings
    entries = [e for e in hotlist.current(s, session.codec).values()
               if source is None or e.source.value == source.upper()]
    session.audit.record(actor=who.name, agency=who.agency, action="HOTLIST_LIST", outcome="ALLOWED",
                         rows=len(entries), details={"source": source or "ALL"})
    for e in sorted(entries, key=lambda e: e.key):
        click.echo(json.dumps(_entry_json(e)))


@click.group("partial")
def partial_cmd() -> None:
    """Partial plates from major crimes (compacted topic alpr.partials)."""


@partial_cmd.command("add")
@click.argument("pattern")
@click.option("--case", "case_number", required=True, help="Case or event number (required).")
@click.option("--incident", "incident_type", required=True, help="Incident type, e.g. HOMICIDE.")
@click.option("--expires-days", type=int, default=None, help="Days active (default: setting partial_expiry_days).")
@click.option("--notes", default=None)
@login_options
def partial_add(pattern, case_number, incident_type, expires_days, notes, actor, password_stdin) -> None:
    """Enter a pattern: ? is one character, * any run, e.g. 7AB?12*."""
    from alpr.alerting import partials

    session, who = login(actor, password_stdin, ANALYSTS, "partials")
    e = partials.add(session.settings, session.codec, pattern=pattern, case_number=case_number,
                     incident_type=incident_type, user=who.name, expires_days=expires_days, notes=notes,
                     audit=session.audit, agency=who.agency)
    click.echo(json.dumps(_entry_json(e)))


@partial_cmd.command("remove")
@click.argument("pattern_id")
@click.option("--reason", required=True, help="Why it is removed (audited).")
@login_options
def partial_remove(pattern_id, reason, actor, password_stdin) -> None:
    """Remove a pattern by its id (publishes a tombstone)."""
    from alpr.alerting import partials

    session, who = login(actor, password_stdin, ANALYSTS, "partials")
    old = partials.remove(session.settings, session.codec, pattern_id=pattern_id, user=who.name, reason=reason,
                          audit=session.audit, agency=who.agency)
    click.echo(json.dumps({"result": "removed", "pattern_id": pattern_id, "pattern": old.pattern}))


@partial_cmd.command("list")
@login_options
def partial_list(actor, password_stdin) -> None:
    """Print the active and expired patterns as JSON lines."""
    from alpr.alerting import partials

    session, who = login(actor, password_stdin, ANALYSTS, "partials")
    entries = partials.current(session.settings, session.codec)
    session.audit.record(actor=who.name, agency=who.agency, action="PARTIAL_LIST", outcome="ALLOWED",
                         rows=len(entries))
    now = datetime.now(timezone.utc)
    for e in sorted(entries.values(), key=lambda e: e.entered_at):
        click.echo(json.dumps({**_entry_json(e), "active": e.expires_at > now}))


@click.command("alerts")
@click.option("--follow", is_flag=True, help="Print alerts as they arrive (operator view) instead of "
              "running the topology worker.")
@click.option("--from-beginning", is_flag=True, help="With --follow: start at the oldest alert kept.")
@click.option("--user", "actor", default=None, help="With --follow: your user name (your password is asked).")
@click.option("--password-stdin", is_flag=True, help="With --follow: read your password from stdin.")
def alerts_cmd(follow: bool, from_beginning: bool, actor: str | None, password_stdin: bool) -> None:
    """Run the alert topology worker (reads -> alerts); with --follow, show alerts to a person."""
    from alpr.alerting.partials import BadInput
    from alpr.topologies import alerts

    if not follow:
        # A person asking for the view must not start a worker by leaving out --follow: a second
        # worker joins the group and moves partitions (a rebalance) under the running ones.
        given = [name for name, on in (("--user", actor), ("--from-beginning", from_beginning),
                                       ("--password-stdin", password_stdin)) if on]
        if given:
            raise BadInput(f"{', '.join(given)} belong(s) to the operator view: add --follow "
                           "(without --follow, `alpr alerts` runs the topology worker)")
        alerts.run_worker(settings())
        return

    if not actor:
        raise BadInput("--follow shows plates: log in with --user")
    session, who = login(actor, password_stdin, ANALYSTS, "alerts-view")
    session.audit.record(actor=who.name, agency=who.agency, action="ALERTS_FOLLOW", outcome="ALLOWED",
                         details={"from_beginning": str(from_beginning)})
    try:
        alerts.follow(session.settings, session.codec, sys.stdout, from_beginning=from_beginning)
    except KeyboardInterrupt:
        pass


COMMANDS: list = [hotlist_cmd, partial_cmd, alerts_cmd]
