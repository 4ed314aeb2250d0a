"""People who may reach ALPR data, and deciding whether a login gets in.

Consumes and produces the compacted topic `alpr.users`:
- `user:<name>` -> `User`: role, agency, argon2id password hash, training date,
  disabled flag. Every change is a new version; users are disabled, never deleted.
- `lockout:<name>` -> `LoginLockout`: consecutive failed logins and the lock.
  Every proxy and CLI process publishes its failures here and follows the topic,
  so a lock placed by one proxy holds in all of them within a poll interval.
  (Between two proxies an attacker can get at most one extra guess each before
  the lock event arrives; the count itself is shared.)

Why a topic and not ClickHouse: in embedded mode only the warehouse process may
open chDB, and `alpr users add` must work while it runs.

A login is refused, with a reason a person can act on, when the name or password
is wrong, the account is locked or disabled, or ALPR training is missing or older
than `training_valid_days`. Every refused login and every change is audited.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from confluent_kafka import Consumer, KafkaError, TopicPartition

from alpr.core import kafka
from alpr.audit.trail import AuditLog, publish_audited
from alpr.core.errors import AlprError, Refused
from alpr.core.logs import get_log
from alpr.core.settings import Settings
from alpr.core.topics import USERS
from alpr.schemas import Codec, UndecodableRecord
from alpr.schemas.models import USER_NAME_RE, LoginLockout, User, UserRole

log = get_log(__name__)
# argon2id with argon2-cffi's RFC 9106 "low memory" profile: 64 MiB, 3 passes, 4 lanes.
_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))  # verified against for unknown names: same cost, no oracle
MIN_PASSWORD_CHARS = 12


class LoginRefused(Refused):
    """A login was refused; the message says why in words the user can act on."""


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise Refused(f"password must have at least {MIN_PASSWORD_CHARS} characters")
    return _HASHER.hash(password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def user_key(name: str) -> str:
    return f"user:{name}"


def lockout_key(name: str) -> str:
    return f"lockout:{name}"


def check_name(name: str) -> str:
    if not USER_NAME_RE.match(name or ""):
        raise Refused(f"user name {name!r} is not valid: 2-64 of a-z 0-9 . _ - starting with a letter")
    return name


def access_problem(user: User, settings: Settings, now: datetime | None = None) -> str | None:
    """Why this account may not reach ALPR data now, or None (the account state only, not the lock)."""
    now = now or datetime.now(timezone.utc)
    if user.disabled:
        return f"account {user.name} is disabled ({user.disabled_reason or 'no reason given'}); ask an administrator"
    if user.trained_at is None:
        return (f"no completed ALPR training is on record for {user.name}; access requires it "
                "(ask an administrator to record it with `alpr users train`)")
    if user.trained_at > now:
        return f"ALPR training of {user.name} is dated in the future ({user.trained_at:%Y-%m-%d}); ask an administrator"
    if now - user.trained_at > timedelta(days=settings.training_valid_days):
        return (f"ALPR training of {user.name} ({user.trained_at:%Y-%m-%d}) is older than "
                f"{settings.training_valid_days} days; a refresher is due before access")
    return None


class UserDirectory:
    """The newest version of every user and lock, read from `alpr.users` and kept current.

    `load()` reads the topic to its end; `follow()` then tails it on a thread. A key
    whose newest record does not decode is remembered as unusable, so a damaged
    record never falls back to an older (perhaps enabled) version: that user gets in
    nowhere until an administrator writes the account again.
    """

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self.settings, self.codec = settings, codec
        self._users: dict[str, User] = {}
        self._locks: dict[str, LoginLockout] = {}
        self._broken: set[str] = set()
        self._lock = threading.Lock()
        self._next_offset = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition(self._lock)
        self.version = 0  # bumped on every applied record, so callers can wait for one

    def load(self) -> "UserDirectory":
        for msg in kafka.read_to_end(self.settings, USERS):
            self._apply(msg.key(), msg.value(), msg.offset())
        log.info("users.loaded", users=len(self._users), offset=self._next_offset)
        return self

    def follow(self) -> "UserDirectory":
        self._thread = threading.Thread(target=self._tail, name="users-follow", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _tail(self) -> None:
        consumer = Consumer(kafka.consumer_config(self.settings, f"users-{socket.gethostname()}", "users-follow",
                                                  logger=kafka._QUIET_LOG))
        try:
            consumer.assign([TopicPartition(USERS, 0, self._next_offset)])  # direct assignment: no group, no commits
            while not self._stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("users.follow_error", error=msg.error().str())
                    continue
                self._apply(msg.key(), msg.value(), msg.offset())
        finally:
            consumer.close()

    def _apply(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        k = (key or b"").decode("utf-8", "replace")
        kind, _, name = k.partition(":")
        with self._lock:
            self._next_offset = max(self._next_offset, offset + 1)
            self.version += 1
            try:
                if kind == "user":
                    user = self.codec.decode(value, User)
                    if user.name != name:
                        raise UndecodableRecord(f"key names {name!r} but record names {user.name!r}")
                    self._users[name] = user
                    self._broken.discard(name)
                elif kind == "lockout":
                    lock = self.codec.decode(value, LoginLockout)
                    if lock.name != name:
                        raise UndecodableRecord(f"key names {name!r} but record names {lock.name!r}")
                    self._locks[name] = lock
                else:
                    log.warning("users.unknown_key", offset=offset)
            except UndecodableRecord as exc:
                self._broken.add(name)  # fail closed: no older version stands in
                log.error("users.undecodable", offset=offset, reason=exc.reason[:200])
            self._changed.notify_all()

    def get(self, name: str) -> User | None:
        with self._lock:
            return None if name in self._broken else self._users.get(name)

    def is_broken(self, name: str) -> bool:
        with self._lock:
            return name in self._broken

    def lockout(self, name: str) -> LoginLockout | None:
        with self._lock:
            return self._locks.get(name)

    def all(self) -> list[User]:
        with self._lock:
            return sorted(self._users.values(), key=lambda u: u.name)

    def wait_until(self, predicate: Callable[["UserDirectory"], bool], timeout: float) -> bool:
        """Block until predicate(self) holds (checked after every applied record) or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self):
                return True
            with self._lock:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.2))


@dataclass
class _Verified:
    password_hash: str
    at: float


class Authenticator:
    """Decides logins against a UserDirectory; counts failures and locks accounts on the topic.

    A verified password is remembered (keyed by an HMAC under a per-process random
    key, never the password) for `proxy_auth_cache_seconds`, and only while the
    stored hash is unchanged: argon2 costs ~0.25 s here on purpose, and every HTTP
    request carries the password. Account state (lock, disabled, training) is
    checked on every request regardless.
    """

    def __init__(self, settings: Settings, directory: UserDirectory, audit: AuditLog, writer: str) -> None:
        self.settings, self.directory, self.audit = settings, directory, audit
        self.writer = f"{writer}@{socket.gethostname()}"
        self._publisher = kafka.Publisher(settings, directory.codec, f"users-{writer}")
        self._cache: dict[bytes, _Verified] = {}
        self._cache_key = os.urandom(32)
        self._lock = threading.Lock()

    def authenticate(self, name: str, password: str, *, via: str, client: str = "",
                     audit_success: bool = False) -> User:
        """The user if they may reach ALPR data now; else LoginRefused (audited) with the reason."""
        now = datetime.now(timezone.utc)
        details = {"via": via, "client": client}
        actor = name if name and USER_NAME_RE.match(name) else f"unknown:{(name or '-')[:64]}"
        user = self.directory.get(name) if USER_NAME_RE.match(name or "") else None
        if user is None:
            _verify(_DUMMY_HASH, password or "x")
            broken = USER_NAME_RE.match(name or "") and self.directory.is_broken(name)
            self._refuse(actor, self.settings.agency, "user name or password is wrong", details,
                         internal="account record undecodable" if broken else "unknown user")
        lock = self.directory.lockout(name)
        if lock is not None and lock.locked_until is not None and lock.locked_until > now:
            self._refuse(name, user.agency, f"account locked after {lock.failures} failed logins until "
                         f"{lock.locked_until:%Y-%m-%d %H:%M} UTC; wait or ask an administrator", details)
        if not self._password_ok(user, password or ""):
            locked_until = self._count_failure(user, lock, now)
            self._refuse(name, user.agency, "user name or password is wrong" + (
                f"; account now locked until {locked_until:%Y-%m-%d %H:%M} UTC" if locked_until else ""),
                details, internal="wrong password")
        if lock is not None and lock.failures > 0:
            self._publish_lock(LoginLockout(name=name, agency=user.agency, failures=0, changed_by=self.writer,
                                            changed_at=now))
        problem = access_problem(user, self.settings, now)
        if problem:
            self._refuse(name, user.agency, problem, details)
        if audit_success:
            self.audit.record(actor=name, agency=user.agency, action="LOGIN", outcome="ALLOWED",
                              subject=via, details={**details, "role": user.role.value})
        return user

    def _refuse(self, actor: str, agency: str, reason: str, details: dict, internal: str | None = None) -> None:
        extra = {**details, "cause": internal} if internal else details
        try:
            self.audit.record(actor=actor, agency=agency, action="LOGIN", outcome="REFUSED", reason=reason,
                              details=extra)
        finally:
            log.info("login.refused", actor=actor, via=details.get("via"))
        raise LoginRefused(reason)

    def _password_ok(self, user: User, password: str) -> bool:
        key = hmac.new(self._cache_key, f"{user.name}\0{password}".encode(), hashlib.sha256).digest()
        ttl = self.settings.proxy_auth_cache_seconds
        with self._lock:
            hit = self._cache.get(key)
        if hit and hit.password_hash == user.password_hash and time.monotonic() - hit.at < ttl:
            return True
        if not _verify(user.password_hash, password):
            return False
        if ttl > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = _Verified(user.password_hash, time.monotonic())
        return True

    def _count_failure(self, user: User, lock: LoginLockout | None, now: datetime) -> datetime | None:
        failures = 1
        if lock is not None and not (lock.locked_until is not None and lock.locked_until <= now):
            failures = lock.failures + 1  # an expired lock starts the count again
        locked_until = None
        if failures >= self.settings.login_max_failures:
            locked_until = now + timedelta(minutes=self.settings.login_lockout_minutes)
        self._publish_lock(LoginLockout(name=user.name, agency=user.agency, failures=failures, last_failure_at=now,
                                        locked_until=locked_until, changed_by=self.writer, changed_at=now))
        return locked_until

    def _publish_lock(self, record: LoginLockout) -> None:
        try:
            self._publisher.publish(USERS, lockout_key(record.name), record)
            self._publisher.flush(10)
        except AlprError as exc:
            log.error("lockout.publish_failed", actor=record.name, error=str(exc))
        self.directory._apply(lockout_key(record.name).encode(), self.directory.codec.encode(record, USERS), -1)


# --- administration (the `alpr users` commands)

ADMIN_ROLES = {UserRole.ADMINISTRATOR}


def _publish_user(settings: Settings, codec: Codec, user: User, audit: AuditLog, action: str, actor: User | None,
                  details: dict[str, str]) -> User:
    """Audit the change, then publish it; a change that did not reach the topic is audited as FAILED."""
    who = actor.name if actor else "system:bootstrap"
    agency = actor.agency if actor else settings.agency
    publish_audited(audit, kafka.Publisher(settings, codec, "users-admin"), [(USERS, user_key(user.name), user)],
                    actor=who, agency=agency, action=action, subject=user.name, details=details)
    log.info("user.changed", action=action, user=user.name)
    return user


def has_administrator(directory: UserDirectory) -> bool:
    return any(u.role == UserRole.ADMINISTRATOR and not u.disabled for u in directory.all())


def bootstrap_open(directory: UserDirectory) -> bool:
    """The first-administrator path (no acting administrator) is open while no enabled administrator
    has training on record. An administrator created untrained (which earlier versions allowed)
    could never log in, and nobody could record their training: this is the way out."""
    return not any(u.role == UserRole.ADMINISTRATOR and not u.disabled and u.trained_at is not None
                   for u in directory.all())


def add_user(settings: Settings, codec: Codec, directory: UserDirectory, audit: AuditLog, actor: User | None, *,
             name: str, role: UserRole, agency: str, password: str, trained_at: datetime | None) -> User:
    check_name(name)
    now = datetime.now(timezone.utc)
    details: dict[str, str] = {}
    if actor is None:
        if role != UserRole.ADMINISTRATOR or not bootstrap_open(directory):
            raise Refused("only an administrator may add users (the first administrator is the one exception)")
        # The first administrator must be able to log in, or the installation is locked out for good.
        if trained_at is None:
            raise Refused("the first administrator needs a completed ALPR training date (--trained YYYY-MM-DD): "
                          "an untrained administrator can never log in, and nobody could record the training")
        if now - trained_at > timedelta(days=settings.training_valid_days):
            raise Refused(f"the first administrator's training ({trained_at:%Y-%m-%d}) is older than "
                          f"{settings.training_valid_days} days: they could not log in; give the refresher's date")
        untrained = [u.name for u in directory.all() if u.role == UserRole.ADMINISTRATOR and not u.disabled]
        details["bootstrap"] = ("recovery: no administrator with training on record (" + ",".join(untrained) + ")"
                                if untrained else "first administrator")
    if directory.get(name) is not None or directory.is_broken(name):
        raise Refused(f"user {name} exists; use `alpr users train/disable` to change it")
    if trained_at is not None and trained_at > now:
        raise Refused("the training date is in the future")
    user = User(name=name, role=role, agency=agency, password_hash=hash_password(password), trained_at=trained_at,
                changed_by=actor.name if actor else "system:bootstrap", changed_at=now)
    return _publish_user(settings, codec, user, audit, "USER_ADD", actor,
                         {"role": role.value, "user_agency": agency,
                          "trained_at": trained_at.isoformat() if trained_at else "", **details})


def _existing(directory: UserDirectory, name: str) -> User:
    user = directory.get(check_name(name))
    if user is None:
        raise Refused(f"no user {name}")
    return user


def disable_user(settings: Settings, codec: Codec, directory: UserDirectory, audit: AuditLog, actor: User,
                 name: str, reason: str) -> User:
    if not reason.strip():
        raise Refused("a reason is required to disable an account")
    user = _existing(directory, name).model_copy(update={
        "disabled": True, "disabled_reason": reason.strip(), "changed_by": actor.name,
        "changed_at": datetime.now(timezone.utc)})
    return _publish_user(settings, codec, user, audit, "USER_DISABLE", actor, {"reason": reason.strip()})


def enable_user(settings: Settings, codec: Codec, directory: UserDirectory, audit: AuditLog, actor: User,
                name: str) -> User:
    user = _existing(directory, name).model_copy(update={
        "disabled": False, "disabled_reason": None, "changed_by": actor.name, "changed_at": datetime.now(timezone.utc)})
    return _publish_user(settings, codec, user, audit, "USER_ENABLE", actor, {})


def record_training(settings: Settings, codec: Codec, directory: UserDirectory, audit: AuditLog, actor: User,
                    name: str, trained_at: datetime) -> User:
    now = datetime.now(timezone.utc)
    if trained_at > now:
        raise Refused("the training date is in the future")
    user = _existing(directory, name).model_copy(update={
        "trained_at": trained_at, "changed_by": actor.name, "changed_at": now})
    return _publish_user(settings, codec, user, audit, "USER_TRAIN", actor, {"trained_at": trained_at.isoformat()})


def unlock_user(settings: Settings, codec: Codec, directory: UserDirectory, audit: AuditLog, actor: User,
                name: str) -> None:
    user = _existing(directory, name)
    audit.record(actor=actor.name, agency=actor.agency, action="USER_UNLOCK", outcome="ALLOWED", subject=name)
    now = datetime.now(timezone.utc)
    publisher = kafka.Publisher(settings, codec, "users-admin")
    publisher.publish(USERS, lockout_key(name), LoginLockout(name=name, agency=user.agency, failures=0,
                                                             changed_by=actor.name, changed_at=now))
    publisher.flush(15)


def describe_user(user: User, lock: LoginLockout | None, settings: Settings) -> dict:
    """What `alpr users list` prints: never the hash."""
    now = datetime.now(timezone.utc)
    locked = lock is not None and lock.locked_until is not None and lock.locked_until > now
    return {"name": user.name, "role": user.role.value.lower(), "agency": user.agency,
            "trained_at": user.trained_at.date().isoformat() if user.trained_at else None,
            "disabled": user.disabled, "locked_until": lock.locked_until.isoformat() if locked else None,
            "access": "ok" if not (locked or access_problem(user, settings, now)) else
            ("locked" if locked else access_problem(user, settings, now))}
