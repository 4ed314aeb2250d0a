"""`alpr` subcommands: operations (status)."""

from __future__ import annotations

import click

from alpr.core.settings import settings


@click.command("status")
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until interrupted.")
@click.option("--interval", type=click.FloatRange(0.5, 60), default=2.0, show_default=True,
              help="Seconds between screens with --watch.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document (one per line with --watch), for scripts.")
def status_cmd(watch: bool, interval: float, as_json: bool) -> None:
    """Each stage: UP/DOWN from heartbeats, instances, throughput, lag, last error."""
    from alpr.core import kafka
    from alpr.ops.status import show

    s = settings()
    kafka.check_reachable(s)
    try:
        show(s, watch, interval=interval, echo=click.echo, as_json=as_json)
    except KeyboardInterrupt:
        pass


COMMANDS: list = [status_cmd]
