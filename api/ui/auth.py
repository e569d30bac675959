"""The admin page's session: a login form trades the admin token for an HttpOnly cookie.

The cookie never holds the token itself: it is `<expiry>.<hmac(token, expiry)>`, so it
expires on its own and every session ends when the token is rotated. Forms also carry a CSRF
value derived from the session (the cookie is SameSite=Strict as well).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, status

from api.deps import SettingsDep

COOKIE = "provenroute_ui"
SESSION_TTL_S = 12 * 3600
UI_PREFIX = "/admin/ui"


def _sign(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def token_matches(presented: str, secret: str) -> bool:
    """Constant-time comparison of a presented token with the admin token."""
    return hmac.compare_digest(presented.encode(), secret.encode())


def new_session(secret: str, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + SESSION_TTL_S)
    return f"{expires}.{_sign(secret, f'ui-session:{expires}')}"


def session_valid(value: str | None, secret: str, now: float | None = None) -> bool:
    if not value or "." not in value:
        return False
    expires, _, sig = value.partition(".")
    if not expires.isdigit() or int(expires) < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(sig.encode(), _sign(secret, f"ui-session:{expires}").encode())


def csrf_for(session: str, secret: str) -> str:
    return _sign(secret, f"ui-csrf:{session}")


def safe_next(target: str | None) -> str:
    """Where to go after login: only paths of the admin page (no open redirect)."""
    if target and target.startswith(UI_PREFIX) and not target.startswith("//"):
        return target
    return UI_PREFIX


async def require_session(request: Request, settings: SettingsDep) -> str:
    """The session cookie, or a redirect to the login form (401 for scripts)."""
    value = request.cookies.get(COOKIE)
    if session_valid(value, settings.admin_token.get_secret_value()):
        assert value is not None
        return value
    wants_html = "text/html" in request.headers.get("accept", "")
    if request.method == "GET" and wants_html:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(
            status.HTTP_303_SEE_OTHER,
            "login required",
            headers={"Location": f"{UI_PREFIX}/login?next={quote(target, safe='')}"},
        )
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, "login required")


Session = Annotated[str, Depends(require_session)]


def check_csrf(session: str, presented: str | None, secret: str) -> None:
    expected = csrf_for(session, secret)
    if not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid form token; reload the page")
