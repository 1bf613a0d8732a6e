"""The demo's API tokens page: a user's tokens, a form to create one and a button to
revoke each. A new token is shown once, after a redirect (post/redirect/get: a refresh
creates no second token), with a Copy button (``static/copy-button.js``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Router

from .store import User

if TYPE_CHECKING:
    from .web import Demo

#: The session's key for a token just created, until the tokens page shows it.
NEW_TOKEN = "new_token"


def add_pages(pages: Router, demo: Demo) -> None:
    async def tokens_page(request: Request, user: User, data: dict[str, str]) -> Response:
        """The list and the form; its POST creates a token and redirects here (no
        refresh creates another), where the new token is shown once: the session
        keeps it until this page's next GET takes it out. Starlette's session is a
        signed cookie, so the token crosses to its owner's browser as the page would
        have carried it, HttpOnly, and leaves it with that GET's answer."""
        if request.method == "POST":
            name = data.get("name", "")
            created = await run_in_threadpool(demo.accounts.create_token, user, name)
            request.session[NEW_TOKEN] = created
            return RedirectResponse("/tokens", status_code=303)
        shown = request.session.pop(NEW_TOKEN, None)
        tokens = await run_in_threadpool(demo.accounts.tokens, user)
        return demo.render(
            request, "tokens.html", tokens=tokens, created=shown if isinstance(shown, str) else None
        )

    async def revoke_token(request: Request, user: User, data: dict[str, str]) -> Response:
        token_id = request.path_params["token_id"]
        await run_in_threadpool(demo.accounts.revoke_token, user, token_id)
        return RedirectResponse("/tokens", status_code=303)

    pages.add_route("/tokens", demo.members(tokens_page), methods=["GET", "POST"])
    pages.add_route("/tokens/{token_id:int}/revoke", demo.members(revoke_token), methods=["POST"])
