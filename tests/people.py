"""Test users on the users topic: one argon2 hash for all of them (hashing is slow on purpose)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from alpr.core import kafka
from alpr.core.topics import USERS
from alpr.access.users import hash_password, user_key
from alpr.schemas.models import User

PASSWORD = "correct horse battery"
NOW = datetime.now(timezone.utc)
_HASH = hash_password(PASSWORD)


def publish_user(settings, codec, name: str, role: str = "ANALYST", trained_days_ago: int | None = 30,
                 disabled: bool = False) -> User:
    user = User(name=name, role=role, agency="SPD", password_hash=_HASH,
                trained_at=None if trained_days_ago is None else NOW - timedelta(days=trained_days_ago),
                disabled=disabled, disabled_reason="left the unit" if disabled else None, changed_by="test",
                changed_at=datetime.now(timezone.utc))
    pub = kafka.Publisher(settings, codec, "test-users")
    pub.publish(USERS, user_key(name), user)
    pub.flush()
    return user
