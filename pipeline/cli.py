"""`alpr`: the one command. Each subcommand is a thin shell over a domain module."""

from __future__ import annotations

import sys

import click

from alpr.core import logs
from alpr.core.errors import AlprError
from alpr.core.settings import describe, settings


class _Group(click.Group):
    """Turns an AlprError anywhere below into one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AlprError as exc:
            click.echo(f"alpr: error: {exc}", err=True)
            sys.exit(exc.exit_code)


# Long-running processes log what they do at INFO; a person's one-off command shows its
# answer and warnings only, unless asked (-v) or ALPR_LOG_LEVEL says otherwise.
SERVICES = frozenset({"camera", "worker", "alerts", "warehouse", "proxy"})


@click.group(cls=_Group)
@click.option("-v", "--verbose", count=True, help="Show what happens: -v info logs, -vv debug logs.")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """Automated license plate reader pipeline."""
    import os

    s = settings()
    if verbose:
        level = "DEBUG" if verbose > 1 else "INFO"
    elif "ALPR_LOG_LEVEL" in os.environ or ctx.invoked_subcommand in SERVICES:
        level = s.log_level
    else:
        level = "WARNING"
    logs.configure(level, s.log_format)


@cli.command("config")
def config_cmd() -> None:
    """List every setting: variable, type, default and meaning, one block per setting."""
    import textwrap

    current = settings()
    for env, typ, default, meaning in describe():
        value = getattr(current, env.removeprefix("ALPR_").lower())
        shown = "(unset)" if value is None else "(secret)" if "password" in env.lower() else value
        click.echo(click.style(env, bold=True) + f"  {typ}")
        click.echo(f"    now: {shown}    default: {default}")
        for line in textwrap.wrap(meaning, width=92):
            click.echo(f"    {line}")


@cli.group()
def stack() -> None:
    """The embedded stack: dev broker and chDB on this machine."""


@stack.command("up")
def stack_up() -> None:
    """Start the dev broker, create topics, migrate the embedded ClickHouse."""
    from alpr.ops import stack as st

    for c in st.up(settings()):
        click.echo(f"{c.name:<28} {c.state:<9} {c.where}")


@stack.command("down")
def stack_down() -> None:
    """Stop what `stack up` started."""
    from alpr.ops import stack as st

    stopped = st.down(settings())
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@stack.command("status")
def stack_status() -> None:
    """Say what runs where."""
    from alpr.ops import stack as st

    for c in st.status(settings()):
        click.echo(f"{c.name:<28} {c.state:<9} {c.where}")


@cli.group()
def topics() -> None:
    """Kafka topics from infra/topics.yaml."""


@topics.command("apply")
def topics_apply() -> None:
    """Create missing topics on the configured cluster."""
    from alpr.core import kafka
    from alpr.core.topics import apply_topics

    s = settings()
    kafka.check_reachable(s)
    created = apply_topics(kafka.admin(s), s.kafka_replication_factor)
    click.echo("created: " + (", ".join(created) if created else "none (all exist)"))


@cli.command("migrate")
def migrate_cmd() -> None:
    """Apply ClickHouse migrations (embedded store or server)."""
    from alpr.core.migrations import migrate
    from alpr.core.store import open_store

    s = settings()
    store = open_store(s)
    try:
        done = migrate(store, s)
    finally:
        store.close()
    click.echo("applied: " + (", ".join(done) if done else "none (up to date)"))


@cli.command("demo")
@click.option("--duration", type=click.FloatRange(min=5), default=60.0, show_default=True,
              help="Seconds to run before printing the summary and stopping.")
def demo_cmd(duration: float) -> None:
    """Run every stage on the embedded stack with sample footage; last line is a JSON summary."""
    import os

    from alpr.ops.demo import run_demo

    if "ALPR_LOG_LEVEL" not in os.environ:  # the demo narrates; stage logs would drown it
        logs.configure("WARNING", settings().log_format)
    run_demo(settings(), duration)


def _register_domains() -> None:
    import importlib

    from alpr.commands import DOMAINS

    for domain in DOMAINS:
        for command in importlib.import_module(f"alpr.commands.{domain}").COMMANDS:
            cli.add_command(command)


_register_domains()


def main() -> None:
    try:
        cli(prog_name="alpr")
    except AlprError as exc:  # raised while loading settings, before a subcommand runs
        click.echo(f"alpr: error: {exc}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
