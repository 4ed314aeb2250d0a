"""`alpr` subcommands: warehouse (the service), reads import, holds, retention, evidence."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import click

from alpr.access.login import ADMINISTRATORS, ANALYSTS, AUDITORS, SUPERVISORS, login, login_options
from alpr.core.settings import settings


def _echo(doc: dict) -> None:
    click.echo(json.dumps(doc, default=str))


def _codec():
    from alpr.schemas import Codec

    return Codec(settings().schema_registry_url)


@click.command("warehouse")
@click.option("--no-proxy", is_flag=True, help="Embedded mode: do not host the SQL proxy in this process.")
def warehouse_cmd(no_proxy: bool) -> None:
    """Run the sink, the holds applier and daily retention (and, embedded, the SQL proxy) until SIGTERM."""
    from alpr.core import kafka
    from alpr.warehouse import service as warehouse
    from alpr.core.migrations import migrate
    from alpr.warehouse.retention import ensure_ttl
    from alpr.core.runtime import ProcessRuntime
    from alpr.core.store import open_store
    from alpr.core.topics import ALERTS, AUDIT, HOLDS, READS

    s = settings()
    kafka.check_reachable(s)
    lag = tuple((f"warehouse-{t}", topic) for t, topic in
                (("reads", READS), ("alerts", ALERTS), ("audit_log", AUDIT), ("holds", HOLDS)))
    parts: dict = {}

    def counters() -> dict[str, float]:
        out = parts["wh"].counters() if "wh" in parts else {}
        if "proxy" in parts:  # `alpr status` lists the embedded proxy under this process
            out["proxy_hosted"] = 1.0
            out["proxy_port"] = float(parts["proxy"].port)
        return out

    # The runtime (signals, deadline, heartbeats) comes first: a SIGTERM during start-up is graceful too.
    with ProcessRuntime(s, "warehouse", counters=counters,
                        ready=lambda: "wh" in parts and parts["wh"].ready(), lag_of=lag) as rt, \
            (warehouse.embedded_lock(s) if not s.clickhouse_url else nullcontext()):
        store = open_store(s)
        try:
            rt.health.beat()
            migrate(store, s)
            ensure_ttl(store, s)
            codec = _codec()
            parts["wh"] = wh = warehouse.Warehouse(s, store, codec)
            services = []
            if not s.clickhouse_url:
                # Embedded: only this process can open the store, so custodial commands
                # (enforce, evidence and release exports) reach it through here ...
                from alpr.warehouse.control import ControlServer

                services.append(ControlServer(s, store))
                if not no_proxy:  # ... and so do analysts.
                    from alpr.access.proxy import ProxyService

                    parts["proxy"] = ProxyService(s, store, codec)
                    services.append(parts["proxy"])
            wh.run(rt.stop, extra_services=services, beat=rt.health.beat)
        finally:
            store.close()
            if "wh" in parts:
                click.echo(json.dumps(parts["wh"].summary()))


@click.group("reads")
def reads_group() -> None:
    """Plate reads: partner imports."""


@reads_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--agency", required=True, help="Partner agency code the reads belong to.")
@click.option("--camera-prefix", default=None, help="Prefix for camera ids (default: 'AGENCY:').")
@login_options
def reads_import(file: Path, agency: str, camera_prefix: str | None, actor: str, password_stdin: bool) -> None:
    """Validate a CSV/JSON Lines partner feed, then publish every row (or none). Administrators."""
    from alpr.warehouse import imports
    from alpr.core.kafka import Publisher

    reads = imports.parse(file, agency, camera_prefix)  # the whole file, before anything is published
    session, who = login(actor, password_stdin, ADMINISTRATORS, "import")
    s = session.settings
    _echo(imports.publish(s, session.audit, Publisher(s, session.codec, "import"), file, reads, who.name))


def _when(text: str | None, option: str):
    """The one rule for --from/--to: a bare date is a whole UTC day, so --to DATE includes that day."""
    from alpr.core.times import parse_when

    return None if text is None else parse_when(text, option, "end" if option == "--to" else "start")


@click.group("holds")
def holds_group() -> None:
    """Evidence holds: reads kept past retention for a case."""


@holds_group.command("add")
@click.option("--case", required=True, help="Case number the reads are evidence in.")
@click.option("--reason", required=True, help="Why they are held (recorded and audited).")
@login_options
@click.option("--read-id", "read_ids", multiple=True, help="A read to hold (repeatable).")
@click.option("--plate", default=None, help="Hold every read of this plate between --from and --to.")
@click.option("--from", "from_", default=None, help="Start: ISO 8601 with timezone, or a date (UTC).")
@click.option("--to", default=None, help="End: ISO 8601 with timezone, or a date (UTC, that whole day included).")
def holds_add(case: str, reason: str, actor: str, password_stdin: bool, read_ids: tuple[str, ...],
              plate: str | None, from_: str | None, to: str | None) -> None:
    """Place a hold (audited, published to alpr.holds). Analysts and supervisors."""
    from alpr.warehouse import holds
    from alpr.core.kafka import Publisher

    range_from, range_to = _when(from_, "--from"), _when(to, "--to")
    session, who = login(actor, password_stdin, ANALYSTS, "holds")
    s = session.settings
    hold = holds.place(s, session.audit, Publisher(s, session.codec, "holds"), case=case, reason=reason,
                       user=who.name, read_ids=read_ids, plate=plate, range_from=range_from, range_to=range_to)
    _echo({**hold.model_dump(mode="json"), "coverage": _coverage(s, hold)})


def _coverage(s, hold) -> dict:
    """What the new hold finds in the store, so a hold on reads that are gone says so (best effort:
    the hold stands whether or not the store can be asked)."""
    from alpr.core.errors import AlprError
    from alpr.core.store import StoreError
    from alpr.warehouse import holds
    from alpr.warehouse.service import open_store_for_command

    try:
        store = open_store_for_command(s)
    except AlprError as exc:
        return {"unknown": f"the store could not be asked ({exc})"}
    try:
        found = holds.coverage(store, s, hold)
    except StoreError as exc:
        return {"unknown": f"the store could not be asked ({exc})"}
    finally:
        store.close()
    if "warning" in found:
        click.echo(f"warning: {found['warning']}", err=True)
    return found


@holds_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include released holds.")
@login_options
def holds_list(show_all: bool, actor: str, password_stdin: bool) -> None:
    """Every active hold (from the alpr.holds topic), one JSON line each."""
    from alpr.warehouse import holds

    session, who = login(actor, password_stdin, ANALYSTS | AUDITORS, "holds")
    found = holds.current(session.settings, session.codec)
    session.audit.record(actor=who.name, agency=who.agency, action="HOLD_LIST", outcome="ALLOWED", rows=len(found))
    for hold in sorted(found.values(), key=lambda h: h.placed_at):
        if show_all or hold.status.value == "ACTIVE":
            _echo(hold.model_dump(mode="json"))


@holds_group.command("release")
@click.option("--case", required=True, help="Case whose holds are released.")
@click.option("--reason", required=True, help="Why (recorded and audited).")
@login_options
def holds_release(case: str, reason: str, actor: str, password_stdin: bool) -> None:
    """Release every active hold of a case; its reads fall under retention again. Supervisors."""
    from alpr.warehouse import holds
    from alpr.core.kafka import Publisher

    session, who = login(actor, password_stdin, SUPERVISORS, "holds")
    s, codec = session.settings, session.codec
    for hold in holds.release(s, codec, session.audit, Publisher(s, codec, "holds"), case=case,
                              reason=reason, user=who.name):
        _echo(hold.model_dump(mode="json"))


@click.group("retention")
def retention_group() -> None:
    """The retention period and its enforcement."""


@retention_group.command("enforce")
@click.option("--as-of", default=None, help="Purge as of this date or time (not in the future); default now.")
@login_options
def retention_enforce(as_of: str | None, actor: str, password_stdin: bool) -> None:
    """Purge reads older than the retention period that no hold covers; prints the counts. Administrators.

    The warehouse runs the same purge daily on its own (as system:retention)."""
    from alpr.warehouse import retention
    from alpr.warehouse.service import open_store_for_command

    when = _when(as_of, "--as-of")
    session, who = login(actor, password_stdin, ADMINISTRATORS, "retention")
    store = open_store_for_command(session.settings)
    try:
        _echo(retention.enforce(store, session.settings, session.codec, session.audit, as_of=when, actor=who.name))
    finally:
        store.close()


@click.group("evidence")
def evidence_group() -> None:
    """Evidence packages of held reads."""


@evidence_group.command("export")
@click.option("--case", required=True, help="Case whose held reads are exported.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="New or empty directory (portable media) to write the package to.")
@login_options
def evidence_export(case: str, out: Path, actor: str, password_stdin: bool) -> None:
    """Write the held reads of a case with their images as a BagIt package (SHA-256 manifests). Supervisors.

    Works while `alpr warehouse` runs (embedded: through it). An export that finds no stored
    reads warns on stderr and is audited as empty."""
    from alpr.warehouse import evidence
    from alpr.warehouse.service import open_store_for_command

    session, who = login(actor, password_stdin, SUPERVISORS, "evidence")
    store = open_store_for_command(session.settings)
    try:
        result = evidence.export(store, session.settings, session.codec, session.audit, case=case, out=out,
                                 user=who.name)
    finally:
        store.close()
    if "warning" in result:
        click.echo(f"warning: {result['warning']}", err=True)
    _echo(result)


@evidence_group.command("verify")
@click.argument("folder", type=click.Path(path_type=Path))
def evidence_verify(folder: Path) -> None:
    """Check an evidence or release package (BagIt); non-zero exit names the first bad file."""
    from alpr.warehouse import evidence

    _echo(evidence.verify(folder))


COMMANDS: list = [warehouse_cmd, reads_group, holds_group, retention_group, evidence_group]
