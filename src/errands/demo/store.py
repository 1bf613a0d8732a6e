"""The demo application's own tables: accounts, sessions and API tokens.

They live in the same database as the task records (the point of the demo: errands
sits in *your* database), but they are the application's, not errands': created with
``create_all`` on start-up, not by errands' migrations. All the demo's SQL is here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)

from ..store.schema import UTCDateTime

metadata = MetaData()

user_table = Table(
    "demo_user",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
)

token_table = Table(
    "demo_token",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Integer, ForeignKey("demo_user.id"), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    #: SHA-256 of the token; the token itself is shown once and never stored.
    Column("digest", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
)

#: Signed-in sessions. The cookie holds a random session id beside the user id; the
#: session counts only while its row exists, so logging out ends it everywhere.
session_table = Table(
    "demo_session",
    metadata,
    #: SHA-256 of the session id; the id itself is only in the (signed) cookie.
    Column("digest", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("demo_user.id"), nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False, index=True),
)

U = user_table.c
K = token_table.c
S = session_table.c


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str
    password_hash: str
    is_admin: bool
    created_at: datetime

    @property
    def owner(self) -> str:
        """The owner id of this user's tasks."""
        return f"user:{self.id}"


@dataclass(frozen=True, slots=True)
class Token:
    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def create_tables(conn: Connection) -> None:
    metadata.create_all(conn, checkfirst=True)


def _user(row: object) -> User:
    m = row._mapping  # type: ignore[attr-defined]
    return User(m["id"], m["email"], m["password_hash"], bool(m["is_admin"]), m["created_at"])


def add_user(
    conn: Connection, email: str, password_hash: str, now: datetime, is_admin: bool = False
) -> User | None:
    """A new account; None if the e-mail address is taken."""
    if conn.execute(select(U.id).where(U.email == email)).first() is not None:
        return None
    conn.execute(
        insert(user_table).values(
            email=email, password_hash=password_hash, is_admin=is_admin, created_at=now
        )
    )
    return user_by_email(conn, email)


def user_by_email(conn: Connection, email: str) -> User | None:
    row = conn.execute(select(user_table).where(U.email == email)).first()
    return None if row is None else _user(row)


def users_by_owner(conn: Connection, owners: list[str]) -> dict[str, str]:
    """E-mail addresses by owner id (``user:<id>``), for admin pages."""
    ids = [int(o[5:]) for o in owners if o.startswith("user:") and o[5:].isdigit()]
    if not ids:
        return {}
    rows = conn.execute(select(U.id, U.email).where(U.id.in_(ids)))
    return {f"user:{r.id}": r.email for r in rows}


def set_password(conn: Connection, user_id: int, password_hash: str) -> None:
    conn.execute(update(user_table).where(U.id == user_id).values(password_hash=password_hash))


def set_admin(conn: Connection, email: str, is_admin: bool) -> bool:
    return bool(
        conn.execute(update(user_table).where(U.email == email).values(is_admin=is_admin)).rowcount
    )


def add_token(conn: Connection, user_id: int, name: str, digest: str, now: datetime) -> None:
    conn.execute(
        insert(token_table).values(user_id=user_id, name=name, digest=digest, created_at=now)
    )


def tokens_of(conn: Connection, user_id: int) -> list[Token]:
    rows = conn.execute(
        select(K.id, K.name, K.created_at, K.last_used_at, K.revoked_at)
        .where(K.user_id == user_id)
        .order_by(K.id.desc())
    )
    return [Token(r.id, r.name, r.created_at, r.last_used_at, r.revoked_at) for r in rows]


def revoke_token(conn: Connection, user_id: int, token_id: int, now: datetime) -> bool:
    """Revoke one of the user's tokens (the user id is in the WHERE clause)."""
    return bool(
        conn.execute(
            update(token_table)
            .where(K.id == token_id, K.user_id == user_id, K.revoked_at.is_(None))
            .values(revoked_at=now)
        ).rowcount
    )


def user_by_token(conn: Connection, digest: str) -> tuple[User, datetime | None] | None:
    """The user a live token belongs to, and when the token was last used."""
    row = conn.execute(
        select(user_table, K.last_used_at.label("token_used"))
        .join(token_table, K.user_id == U.id)
        .where(K.digest == digest, K.revoked_at.is_(None))
    ).first()
    return None if row is None else (_user(row), row.token_used)


def touch_token(conn: Connection, digest: str, now: datetime) -> None:
    conn.execute(update(token_table).where(K.digest == digest).values(last_used_at=now))


def add_session(
    conn: Connection, user_id: int, digest: str, now: datetime, expired_before: datetime
) -> None:
    """A new session of the user; sessions older than ``expired_before`` go."""
    conn.execute(delete(session_table).where(S.created_at < expired_before))
    conn.execute(insert(session_table).values(digest=digest, user_id=user_id, created_at=now))


def user_by_session(
    conn: Connection, user_id: int, digest: str, expired_before: datetime
) -> User | None:
    """The user of a live session (the user id is in the WHERE clause: a session id
    names one user)."""
    row = conn.execute(
        select(user_table)
        .join(session_table, S.user_id == U.id)
        .where(S.digest == digest, S.user_id == user_id, S.created_at >= expired_before)
    ).first()
    return None if row is None else _user(row)


def end_session(conn: Connection, digest: str) -> None:
    conn.execute(delete(session_table).where(S.digest == digest))
