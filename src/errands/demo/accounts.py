"""Accounts of the demo application: passwords, sessions, CSRF tokens, API tokens.

- Passwords are hashed with Argon2id (``argon2-cffi``'s defaults: 64 MiB, 3 passes),
  on the pages in a :class:`~errands.demo.lane.Lane` of their own (a flood of logins
  waits there, or is refused as busy, and never holds up other pages).
- A login for an unknown address still spends one hash, and both failures say the
  same thing, so neither the answer nor its timing tells whether an account exists.
  Registering does not tell either (:meth:`Accounts.sign_up`): an address that has an
  account, registered with that account's password, signs its owner in as a new
  registration would; with another password the answer is the login's wrong-password
  answer. What remains: without e-mail verification (a demo sends no mail), whoever
  registers an address first owns its account, so trying to register an address tells
  whether it was taken (it signs you in when it was not). Login and registration are
  throttled alike (``throttle.py``), so finding accounts costs as much as guessing.
- Sessions are Starlette's signed cookies (``SessionMiddleware``): HttpOnly,
  ``SameSite=Lax``; they hold the user id, a random session id and the CSRF token. The
  session id must also be in ``demo_session`` (as its SHA-256), so logging out ends
  the session for every copy of the cookie, and a session lasts ``SESSION_SECONDS``.
- Every form carries the session's CSRF token; a POST without the right one is refused.
- API tokens are random strings shown once; the database keeps their SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.requests import HTTPConnection

from . import store
from .lane import Lane
from .store import User

if TYPE_CHECKING:
    from ..app import Errands

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not a password anyone has")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
MIN_PASSWORD = 8
TOKEN_PREFIX = "ert_"
#: The answer to a wrong password and to an unknown address, at login and registration.
WRONG = "Wrong e-mail address or password."
#: How long a session lasts (the cookie's max-age and the row's).
SESSION_SECONDS = 14 * 24 * 3600


class AccountError(ValueError):
    """A message for the person at the form."""


class WrongCredentials(AccountError):
    """A wrong password, or an unknown address at login (the same answer: ``WRONG``)."""

    def __init__(self) -> None:
        super().__init__(WRONG)


def check_password(password: str) -> None:
    """A new password's length; ``AccountError`` says what is wrong."""
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"Choose a password of at least {MIN_PASSWORD} characters.")
    if len(password) > 1024:
        raise AccountError("That password is too long.")


def _verified(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise AccountError("Enter a valid e-mail address.")
    return email


def now() -> datetime:
    return datetime.now(UTC)


class Accounts:
    def __init__(self, app: Errands, lane: Lane | None = None) -> None:
        self.app = app
        self.db = app.db
        #: Where the pages' password hashes run (``sign_in``, ``sign_up``).
        self.lane = lane if lane is not None else Lane("errands-demo-hash")

    def setup(self) -> None:
        self.db.write(store.create_tables)

    # -- registering and logging in ----------------------------------------------------
    def register(self, email: str, password: str, *, is_admin: bool = False) -> User:
        """A new account (``createadmin``, tests; the register form uses ``sign_up``)."""
        email = normalize_email(email)
        check_password(password)
        user = self.db.write(store.add_user, email, _hasher.hash(password), now(), is_admin)
        if user is None:
            raise AccountError("An account with this e-mail address exists; log in instead.")
        return user

    async def sign_in(self, email: str, password: str) -> User:
        """The login form: the user with this address and password; the same error
        (``WRONG``) for a wrong password and an unknown address. The hash runs in the
        lane (:class:`~errands.demo.lane.LaneFull` when it is full)."""
        try:
            email = normalize_email(email)
        except AccountError:
            raise WrongCredentials from None
        user = await self.db.arun(self.db.read, store.user_by_email, email)
        return await self._checked(user, password)

    async def sign_up(self, email: str, password: str) -> User:
        """The register form: a new account; for an address that has one, its user
        when the password is that account's (as a login would), else the login's
        ``WRONG`` error. One hash either way, in the lane."""
        email = normalize_email(email)
        check_password(password)
        user: User | None = await self.db.arun(self.db.read, store.user_by_email, email)
        if user is None:
            password_hash = await self.lane.run(_hasher.hash, password)
            user = await self.db.arun(
                self.db.write, store.add_user, email, password_hash, now(), False, write=True
            )
            if user is not None:
                return user
            # Registered by someone else meanwhile: now an existing address.
            user = await self.db.arun(self.db.read, store.user_by_email, email)
        return await self._checked(user, password)

    async def _checked(self, user: User | None, password: str) -> User:
        """``user`` when ``password`` is theirs, else ``WRONG`` (one hash either way)."""
        known = user.password_hash if user else _DUMMY_HASH
        if not await self.lane.run(_verified, known, password[:1024]) or user is None:
            raise WrongCredentials
        if _hasher.check_needs_rehash(user.password_hash):
            new_hash = await self.lane.run(_hasher.hash, password)
            await self.db.arun(self.db.write, store.set_password, user.id, new_hash, write=True)
        return user

    def make_admin(self, email: str, password: str | None = None) -> User:
        """``errands createadmin``: an existing account becomes an administrator, or a
        new one is created (then ``password`` is needed)."""
        email = normalize_email(email)
        if self.db.write(store.set_admin, email, True):
            user = self.db.read(store.user_by_email, email)
            assert user is not None
            return user
        if not password:
            raise AccountError("No such account; give a password to create it.")
        return self.register(email, password, is_admin=True)

    # -- who is asking -----------------------------------------------------------------
    def user_for(self, conn: HTTPConnection) -> User | None:
        """The signed-in user (session cookie) or the API token's (``Bearer``)."""
        auth = conn.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return self.user_for_token(auth[7:].strip())
        session = conn.session if "session" in conn.scope else {}
        user_id, session_id = session.get("user"), session.get("sid")
        if not isinstance(user_id, int) or not isinstance(session_id, str):
            return None
        return self.db.read(store.user_by_session, user_id, _digest(session_id), _expiry())

    # -- sessions ----------------------------------------------------------------------
    def log_in(self, conn: HTTPConnection, user: User) -> None:
        """Start a new session (nothing of the old one is kept: no fixation)."""
        session_id = secrets.token_urlsafe(32)
        self.db.write(store.add_session, user.id, _digest(session_id), now(), _expiry())
        conn.session.clear()
        conn.session.update(user=user.id, sid=session_id, csrf=secrets.token_urlsafe(24))

    def log_out(self, conn: HTTPConnection) -> None:
        """End the session, for this browser and any copy of its cookie."""
        session_id = conn.session.get("sid")
        if isinstance(session_id, str):
            self.db.write(store.end_session, _digest(session_id))
        conn.session.clear()

    def user_for_token(self, token: str) -> User | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = _digest(token)
        found = self.db.read(store.user_by_token, digest)
        if found is None:
            return None
        user, used = found
        stamp = now()
        if used is None or stamp - used > timedelta(minutes=5):
            self.db.write(store.touch_token, digest, stamp)  # at most one write per 5 min
        return user

    # -- API tokens --------------------------------------------------------------------
    def create_token(self, user: User, name: str) -> str:
        name = name.strip()[:100] or "token"
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.db.write(store.add_token, user.id, name, _digest(token), now())
        return token

    def tokens(self, user: User) -> list[store.Token]:
        return self.db.read(store.tokens_of, user.id)

    def revoke_token(self, user: User, token_id: int) -> bool:
        return self.db.write(store.revoke_token, user.id, token_id, now())


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _expiry() -> datetime:
    """Sessions started before this have ended."""
    return now() - timedelta(seconds=SESSION_SECONDS)


# -- CSRF --------------------------------------------------------------------------------
def csrf_token(conn: HTTPConnection) -> str:
    token = conn.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        conn.session["csrf"] = token
    return token


def csrf_ok(conn: HTTPConnection, submitted: object) -> bool:
    expected = conn.session.get("csrf")
    return (
        isinstance(expected, str)
        and isinstance(submitted, str)
        and hmac.compare_digest(expected.encode(), submitted.encode())
    )
