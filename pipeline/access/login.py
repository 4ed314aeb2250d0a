"""Who is at the keyboard: every `alpr` command that shows or changes ALPR data logs its user in.

The policy allows access only to trained, authorized members through a login and
password, every access documented by name, date and time. So a command names its
user with --user, the password comes from a hidden prompt or, with
--password-stdin, from stdin (never from argv, where it would sit in shell
history and the process list), and the login itself is an audit event. Roles
decide which commands a user may run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from alpr.core.errors import AlprError, Refused
from alpr.core.settings import settings
from alpr.schemas.models import User, UserRole


def read_passwords(password_stdin: bool, prompts: list[tuple[str, bool]]) -> list[str]:
    """One password per prompt: stdin lines with --password-stdin, else hidden prompts (bool: confirm)."""
    if password_stdin:
        lines = sys.stdin.read().splitlines()
        if len(lines) < len(prompts):
            raise AlprError(f"--password-stdin expects {len(prompts)} line(s) on stdin: "
                            + ", then ".join(p for p, _ in prompts))
        return lines[:len(prompts)]
    return [click.prompt(p, hide_input=True, confirmation_prompt=confirm, err=True) for p, confirm in prompts]


class Session:
    """What a command needs: settings, codec, audit writer, the users, and the authenticated actor."""

    def __init__(self, writer: str) -> None:
        from alpr.core import kafka
        from alpr.audit.trail import AuditLog
        from alpr.access.users import Authenticator, UserDirectory
        from alpr.schemas import Codec

        self.settings = settings()
        kafka.check_reachable(self.settings)
        self.codec = Codec(self.settings.schema_registry_url)
        self.audit = AuditLog(self.settings, self.codec, writer)
        self.directory = UserDirectory(self.settings, self.codec).load()
        self.auth = Authenticator(self.settings, self.directory, self.audit, writer)

    def login(self, name: str, password: str, roles: set[UserRole] | None = None) -> User:
        user = self.auth.authenticate(name, password, via="cli", audit_success=True)
        if roles and user.role not in roles:
            raise Refused(f"{name} is {user.role.value.lower()}; this needs "
                          + " or ".join(sorted(r.value.lower() for r in roles)))
        return user


def login_options(command: Callable) -> Callable:
    """--user NAME and --password-stdin, for a command that logs its user in."""
    command = click.option("--password-stdin", is_flag=True,
                           help="Read your password from stdin instead of a prompt.")(command)
    return click.option("--user", "actor", required=True, help="Your user name; your password is asked.")(command)


def login(actor: str, password_stdin: bool, roles: set[UserRole], writer: str) -> tuple[Session, User]:
    """Open a session and log `actor` in with one of `roles`; raises Refused (one line) otherwise."""
    session = Session(writer)
    (password,) = read_passwords(password_stdin, [(f"password of {actor}", False)])
    return session, session.login(actor, password, roles)


ANALYSTS = {UserRole.ANALYST, UserRole.SUPERVISOR}
SUPERVISORS = {UserRole.SUPERVISOR}
AUDITORS = {UserRole.AUDITOR, UserRole.ADMINISTRATOR}
ADMINISTRATORS = {UserRole.ADMINISTRATOR}
