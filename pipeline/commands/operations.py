"""`alpr` subcommands: operations (status)."""

from __future__ import annotations

import click

from alpr.core.settings import settings


@click.command("status")
@click.option("--watch", is_flag=True, help="Refresh every two seconds until interrupted.")
def status_cmd(watch: bool) -> None:
    """Each stage: instances up, throughput, lag, last error."""
    from alpr.core import kafka
    from alpr.ops.status import show

    s = settings()
    kafka.check_reachable(s)
    try:
        show(s, watch, echo=click.echo)
    except KeyboardInterrupt:
        pass


COMMANDS: list = [status_cmd]
