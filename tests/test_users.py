"""Users on the alpr.users topic: who gets in, why not, lockouts, and the audited `alpr users` commands."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from alpr.core import kafka
from alpr.audit.trail import AuditLog, read_events
from alpr.core.errors import Refused
from alpr.core.topics import USERS
from alpr.access.users import (
    Authenticator, LoginRefused, UserDirectory, access_problem, hash_password, lockout_key, user_key,
)
from alpr.schemas.models import LoginLockout, User
from tests.people import PASSWORD, publish_user


@pytest.fixture
def directory(settings, codec):
    return UserDirectory(settings, codec)


def _auth(settings, codec, directory, writer="users-test"):
    return Authenticator(settings, directory, AuditLog(settings, codec, writer), writer)


def test_password_hash_is_argon2id_and_short_passwords_refused() -> None:
    h = hash_password("a long enough password")
    assert h.startswith("$argon2id$") and "a long enough password" not in h
    with pytest.raises(Refused, match="at least 12"):
        hash_password("short")


def test_access_problems_name_the_reason(settings) -> None:
    now = datetime.now(timezone.utc)
    base = dict(role="ANALYST", agency="SPD", password_hash="$argon2id$x", changed_by="t", changed_at=now)
    assert access_problem(User(name="ok1", trained_at=now - timedelta(days=10), **base), settings) is None
    assert "no completed ALPR training" in access_problem(User(name="u1", **base), settings)
    old = User(name="u2", trained_at=now - timedelta(days=settings.training_valid_days + 1), **base)
    assert "refresher is due" in access_problem(old, settings)
    off = User(name="u3", trained_at=now, disabled=True, disabled_reason="transferred", **base)
    assert "disabled (transferred)" in access_problem(off, settings)


def test_login_decisions_and_audit(settings, codec, unique, directory) -> None:
    ok, untrained = f"ok-{unique}", f"untrained-{unique}"
    publish_user(settings, codec, ok)
    publish_user(settings, codec, untrained, trained_days_ago=None)
    directory.load()
    auth = _auth(settings, codec, directory)
    since = datetime.now(timezone.utc)
    assert auth.authenticate(ok, PASSWORD, via="test").name == ok
    with pytest.raises(LoginRefused, match="name or password is wrong"):
        auth.authenticate(ok, "not the password", via="test")
    with pytest.raises(LoginRefused, match="no completed ALPR training"):
        auth.authenticate(untrained, PASSWORD, via="test")
    with pytest.raises(LoginRefused, match="name or password is wrong"):
        auth.authenticate(f"ghost-{unique}", PASSWORD, via="test")
    refused = [ev for _, ev in read_events(settings, codec) if ev.occurred_at >= since and ev.action == "LOGIN"]
    assert {(e.actor, e.outcome.value) for e in refused} >= {(ok, "REFUSED"), (untrained, "REFUSED"),
                                                               (f"ghost-{unique}", "REFUSED")}
    assert any("training" in (e.reason or "") for e in refused if e.actor == untrained)


def test_lockout_after_failures_then_cleared_by_a_newer_lock_record(settings, codec, unique, directory) -> None:
    name = f"lock-{unique}"
    publish_user(settings, codec, name)
    directory.load()
    s = settings.model_copy(update={"login_max_failures": 2})
    auth = _auth(s, codec, directory)
    for _ in range(2):
        with pytest.raises(LoginRefused):
            auth.authenticate(name, "wrong password here", via="test")
    with pytest.raises(LoginRefused, match="locked"):
        auth.authenticate(name, PASSWORD, via="test")
    # an administrator clears it (the lock record is replaced on the topic)
    pub = kafka.Publisher(settings, codec, "test")
    pub.publish(USERS, lockout_key(name), LoginLockout(name=name, agency="SPD", failures=0, changed_by="admin",
                                                       changed_at=datetime.now(timezone.utc)))
    pub.flush()
    fresh = UserDirectory(settings, codec).load()
    assert _auth(s, codec, fresh).authenticate(name, PASSWORD, via="test").name == name


def test_expired_lock_lets_the_right_password_in(settings, codec, unique, directory) -> None:
    name = f"exp-{unique}"
    publish_user(settings, codec, name)
    past = datetime.now(timezone.utc) - timedelta(minutes=1)
    pub = kafka.Publisher(settings, codec, "test")
    pub.publish(USERS, lockout_key(name), LoginLockout(name=name, agency="SPD", failures=5, locked_until=past,
                                                       changed_by="proxy", changed_at=past))
    pub.flush()
    directory.load()
    assert _auth(settings, codec, directory).authenticate(name, PASSWORD, via="test").name == name


def test_undecodable_user_record_fails_closed(settings, codec, unique, directory) -> None:
    name = f"broken-{unique}"
    publish_user(settings, codec, name)
    pub = kafka.Publisher(settings, codec, "test")
    pub.publish_raw(USERS, user_key(name).encode(), b"\xc3\x01garbage")  # the newest version is damaged
    pub.flush()
    directory.load()
    assert directory.get(name) is None  # the older, valid version does not stand in
    with pytest.raises(LoginRefused):
        _auth(settings, codec, directory).authenticate(name, PASSWORD, via="test")


def test_users_commands_are_authenticated_and_audited(settings, codec, unique, alpr) -> None:
    _alpr = alpr
    admin, newbie = f"admin-{unique}", f"new-{unique}"
    publish_user(settings, codec, admin, role="ADMINISTRATOR")
    since = datetime.now(timezone.utc)
    # no --user while an administrator exists: refused
    r = _alpr(["users", "add", f"x-{unique}", "--role", "analyst", "--agency", "SPD", "--password-stdin"],
              "a new password 1\n")
    assert r.exit_code != 0 and "only an administrator" in r.output
    # passwords never come from argv
    r = _alpr(["users", "add", newbie, "--role", "analyst", "--agency", "SPD", "--password", "x"])
    assert r.exit_code != 0
    r = _alpr(["users", "add", newbie, "--role", "analyst", "--agency", "SPD", "--user", admin, "--password-stdin"],
              f"{PASSWORD}\nnewbie password 1\n")
    assert r.exit_code == 0, r.output
    r = _alpr(["users", "train", newbie, "--date", (since - timedelta(days=1)).date().isoformat(), "--user", admin,
               "--password-stdin"], f"{PASSWORD}\n")
    assert r.exit_code == 0, r.output
    r = _alpr(["users", "disable", newbie, "--reason", "left the unit", "--user", admin, "--password-stdin"],
              f"{PASSWORD}\n")
    assert r.exit_code == 0, r.output
    r = _alpr(["users", "list"])
    assert r.exit_code != 0  # the user list is for administrators, who log in
    r = _alpr(["users", "list", "--user", admin, "--password-stdin"], f"{PASSWORD}\n")
    rows = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    mine = [x for x in rows if x["name"] == newbie]
    assert mine and mine[0]["disabled"] and "disabled" in mine[0]["access"]
    assert "argon2" not in r.output
    events = [ev for _, ev in read_events(settings, codec) if ev.occurred_at >= since and ev.actor == admin]
    assert [e.action for e in events if e.action.startswith("USER_")] == ["USER_ADD", "USER_TRAIN", "USER_DISABLE"]
    # a wrong administrator password changes nothing
    r = _alpr(["users", "enable", newbie, "--user", admin, "--password-stdin"], "wrong password!!\n")
    assert r.exit_code != 0 and "password is wrong" in r.output


def test_users_unlock_and_enable_commands_restore_access(settings, codec, unique, alpr, monkeypatch) -> None:
    _alpr = alpr
    """What an administrator does on a Monday: an analyst locked out by typos, another back from leave."""
    monkeypatch.setenv("ALPR_LOGIN_MAX_FAILURES", "2")
    admin, analyst = f"admin-{unique}", f"an-{unique}"
    publish_user(settings, codec, admin, role="ADMINISTRATOR")
    publish_user(settings, codec, analyst, role="ANALYST")
    as_analyst = ["hotlist", "list", "--user", analyst, "--password-stdin"]
    for _ in range(2):
        assert _alpr(as_analyst, "not my password\n").exit_code != 0
    r = _alpr(as_analyst, f"{PASSWORD}\n")
    assert r.exit_code != 0 and "locked" in r.output
    r = _alpr(["users", "unlock", analyst, "--user", admin, "--password-stdin"], f"{PASSWORD}\n")
    assert r.exit_code == 0, r.output
    assert _alpr(as_analyst, f"{PASSWORD}\n").exit_code == 0
    r = _alpr(["users", "disable", analyst, "--reason", "extended leave", "--user", admin, "--password-stdin"],
              f"{PASSWORD}\n")
    assert r.exit_code == 0, r.output
    r = _alpr(as_analyst, f"{PASSWORD}\n")
    assert r.exit_code != 0 and "disabled" in r.output
    r = _alpr(["users", "enable", analyst, "--user", admin, "--password-stdin"], f"{PASSWORD}\n")
    assert r.exit_code == 0, r.output
    assert _alpr(as_analyst, f"{PASSWORD}\n").exit_code == 0
    actions = [(e.actor, e.action, e.outcome.value) for _, e in read_events(settings, codec)
               if e.subject == analyst or e.actor == analyst]
    assert (admin, "USER_UNLOCK", "ALLOWED") in actions and (admin, "USER_ENABLE", "ALLOWED") in actions
    assert (analyst, "LOGIN", "REFUSED") in actions


@pytest.fixture
def fresh_install(tmp_path, monkeypatch):
    """A broker of its own: the first-administrator path depends on the users topic being empty."""
    from alpr.core.settings import load_settings
    from alpr.core.settings import settings as cached
    from alpr.core.topics import apply_topics
    from alpr.ops.broker import DevBroker, free_port

    from alpr.cli import cli

    b = DevBroker("127.0.0.1", free_port(), tmp_path / "broker.log").start()
    s = load_settings(kafka_bootstrap=b.bootstrap, data_dir=tmp_path / "data")
    apply_topics(kafka.admin(s), replication_factor=1)
    for key in [k for k in os.environ if k.startswith("ALPR_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("ALPR_KAFKA_BOOTSTRAP", s.kafka_bootstrap)
    monkeypatch.setenv("ALPR_DATA_DIR", str(s.data_dir))

    def run(args: list[str], stdin: str = ""):
        cached.cache_clear()
        return CliRunner().invoke(cli, args, input=stdin, catch_exceptions=False)

    yield s, run
    cached.cache_clear()
    b.stop()


def test_first_administrator_cannot_lock_the_installation_out(fresh_install, codec) -> None:
    settings, _alpr = fresh_install
    first = ["users", "add", "chief", "--role", "administrator", "--agency", "RIC", "--password-stdin"]
    untrained = _alpr(first, "first admin password\n")
    assert untrained.exit_code != 0 and "--trained" in untrained.output
    stale = _alpr([*first, "--trained", "2020-01-01"], "first admin password\n")
    assert stale.exit_code != 0 and "older than" in stale.output
    analyst = _alpr(["users", "add", "x-an", "--role", "analyst", "--agency", "RIC", "--trained", "2026-11-01",
                     "--password-stdin"], "an analyst password\n")
    assert analyst.exit_code != 0 and "only an administrator" in analyst.output
    assert UserDirectory(settings, codec).load().all() == []  # nothing was written by the refusals

    ok = _alpr([*first, "--trained", (datetime.now(timezone.utc) - timedelta(days=3)).date().isoformat()],
               "first admin password\n")
    assert ok.exit_code == 0, ok.output
    # the first administrator can log in and work at once: train someone else
    again = _alpr(["users", "add", "second", "--role", "administrator", "--agency", "RIC", "--trained",
                   "2026-11-01", "--password-stdin"], "another password\n")
    assert again.exit_code != 0 and "only an administrator" in again.output  # the path is closed now
    added = _alpr(["users", "add", "clerk", "--role", "analyst", "--agency", "RIC", "--user", "chief",
                   "--password-stdin"], "first admin password\nclerk password 12\n")
    assert added.exit_code == 0, added.output
    trained = _alpr(["users", "train", "clerk", "--date", "2026-11-01", "--user", "chief", "--password-stdin"],
                    "first admin password\n")
    assert trained.exit_code == 0, trained.output


def test_an_installation_locked_out_by_an_untrained_first_admin_can_recover(fresh_install, codec) -> None:
    """What earlier versions allowed: an untrained first administrator. The path stays open until an
    administrator with training exists, and the recovery is audited as such."""
    settings, _alpr = fresh_install
    publish_user(settings, codec, "stuck-admin", role="ADMINISTRATOR", trained_days_ago=None)
    r = _alpr(["users", "list", "--user", "stuck-admin", "--password-stdin"], f"{PASSWORD}\n")
    assert r.exit_code != 0 and "training" in r.output  # locked out, as reported
    ok = _alpr(["users", "add", "chief2", "--role", "administrator", "--agency", "RIC", "--trained", "2026-11-01",
                "--password-stdin"], "first admin password\n")
    assert ok.exit_code == 0, ok.output
    (event,) = [e for _, e in read_events(settings, codec) if e.action == "USER_ADD"]
    assert event.actor == "system:bootstrap" and event.details["bootstrap"].startswith("recovery")
    r = _alpr(["users", "train", "stuck-admin", "--date", "2026-11-01", "--user", "chief2", "--password-stdin"],
              "first admin password\n")
    assert r.exit_code == 0, r.output
