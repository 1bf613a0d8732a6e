"""The register, login and logout pages.

A POSTed login or registration goes through three steps:

1. The throttles (``throttle.py``, ``Demo.logins``): the attempt is counted under the
   e-mail address typed and under the client's address before any password is
   checked. A refused attempt gets the form again with "Too many attempts; try again
   in N s." (429, ``Retry-After``) and costs no Argon2 hash; during a lock-out the
   right password is refused too.
2. The password, checked in the accounts' hashing lane (``lane.py``). When the lane is
   full the answer is "The server is busy; try again in a moment." at once (503,
   ``Retry-After: 1``), and the attempt is given back: nothing was checked.
3. The answer. A wrong password, an unknown address at login, and an address that has
   an account registered with another password all get the same page: the login form
   with "Wrong e-mail address or password." (400), byte for byte the login's answer.
   A right password signs in (a new session) and goes on to ``next`` (login) or home.

A right login gives its attempt back and ends the e-mail address's count; a
registration always counts for the client's address (so trying addresses through the
register form costs as much as guessing passwords).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Router

from .accounts import WRONG, AccountError, WrongCredentials
from .lane import LaneFull
from .store import User
from .throttle import retry_after

if TYPE_CHECKING:
    from .web import Demo

BUSY = "The server is busy; try again in a moment."


def too_many(seconds: int) -> str:
    return f"Too many attempts; try again in {seconds} s."


def safe_next(target: str | None) -> str:
    """Only local paths: no open redirects."""
    return target if target and target.startswith("/") and not target.startswith("//") else "/"


def throttle_keys(request: Request, email: str) -> tuple[str, str]:
    """The attempt's keys: the e-mail address as typed (trimmed, lower case, whether or
    not an account has it) and the client's address."""
    client = request.client.host if request.client is not None else "unknown"
    return email.strip().lower()[:320], client


def add_pages(pages: Router, demo: Demo) -> None:
    async def form_page(request: Request, template: str, **context: Any) -> Response | None:
        """The form (GET), or None for a POST to go on with."""
        await demo.signed_in(request)
        if request.method == "GET":
            return demo.render(request, template, **context)
        return None

    def refused(
        request: Request, template: str, status: int, error: str, email: str, **context: Any
    ) -> Response:
        return demo.render(request, template, status, error=error, email=email, **context)

    async def attempt(
        request: Request, template: str, data: dict[str, str], *, registering: bool, next_url: str
    ) -> Response:
        email, password = data.get("email", ""), data.get("password", "")
        context: dict[str, Any] = {} if registering else {"next": next_url}
        key, client = throttle_keys(request, email)
        wait = demo.logins.attempt(key, client)
        if wait:
            seconds = retry_after(wait)
            response = refused(request, template, 429, too_many(seconds), email, **context)
            response.headers["Retry-After"] = str(seconds)
            return response
        try:
            if registering:
                user: User = await demo.accounts.sign_up(email, password)
            else:
                user = await demo.accounts.sign_in(email, password)
        except LaneFull:  # nothing was checked: the attempt does not count
            demo.logins.account.give_back(key)
            demo.logins.address.give_back(client)
            response = refused(request, template, 503, BUSY, email, **context)
            response.headers["Retry-After"] = "1"
            return response
        except WrongCredentials:
            # The login's answer, from the register form too (its "next" is home).
            return refused(request, "login.html", 400, WRONG, email, next=next_url)
        except AccountError as exc:  # the register form's fields: no password was checked
            demo.logins.account.give_back(key)
            return refused(request, template, 400, str(exc), email, **context)
        demo.logins.account.forgive(key)
        if not registering:  # a registration counts for the client's address, always
            demo.logins.address.give_back(client)
        await run_in_threadpool(demo.accounts.log_in, request, user)
        target = "/" if registering else safe_next(data.get("next"))
        return RedirectResponse(target, status_code=303)

    async def register_page(request: Request) -> Response:
        shown = await form_page(request, "register.html")
        if shown is not None:
            return shown
        data = await demo.form(request)
        if data is None:
            return demo.csrf_refused(request)
        return await attempt(request, "register.html", data, registering=True, next_url="/")

    async def login_page(request: Request) -> Response:
        next_url = safe_next(request.query_params.get("next"))
        shown = await form_page(request, "login.html", next=next_url)
        if shown is not None:
            return shown
        data = await demo.form(request)
        if data is None:
            return demo.csrf_refused(request)
        return await attempt(request, "login.html", data, registering=False, next_url=next_url)

    async def logout(request: Request) -> Response:
        if await demo.form(request) is None:
            return demo.csrf_refused(request)
        await run_in_threadpool(demo.accounts.log_out, request)
        return RedirectResponse("/login", status_code=303)

    pages.add_route("/register", register_page, methods=["GET", "POST"])
    pages.add_route("/login", login_page, methods=["GET", "POST"])
    pages.add_route("/logout", logout, methods=["POST"])
