"""Just enough of a browser for redirect flows across sites: it follows redirects by
hand and keeps cookies per host the way browsers decide to send them.

- Host-only cookies, sent when the path matches; `Secure` ones too, since browsers treat
  loopback hosts as secure contexts.
- `SameSite=Strict` cookies are sent only when every URL of the navigation so far (its
  initiator and each redirect) is on the target's site; `Lax` ones on any top-level GET
  navigation; `None` always. A site here is the host: the service (127.0.0.1), the
  provider (127.0.0.2) and the frontend (localhost) are three sites.
- A cookie with `Max-Age=0` or an empty value is deleted.

`navigate` stops at the first URL that starts with one of `stop_at` (the frontend, which
nobody serves in the tests), without requesting it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp

REDIRECTS = {301, 302, 303, 307, 308}


def site(url: str) -> str:
    return urlsplit(url).hostname or ""


@dataclass
class StoredCookie:
    name: str
    value: str
    host: str
    path: str
    samesite: str  # strict | lax | none
    attributes: dict[str, str]


@dataclass
class Visit:
    url: str                      # where the navigation ended (not requested if stopped)
    hops: list[str]               # every URL requested, in order
    status: int | None = None     # of the last response, when not stopped
    set_cookies: list[str] = field(default_factory=list)  # every Set-Cookie seen

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.url).query).items()}


class Browser:
    def __init__(self, http: aiohttp.ClientSession, stop_at: tuple[str, ...]) -> None:
        self.http = http
        self.stop_at = stop_at
        self.cookies: dict[tuple[str, str, str], StoredCookie] = {}

    def cookie(self, name: str) -> StoredCookie | None:
        return next((c for c in self.cookies.values() if c.name == name), None)

    def _store(self, url: str, headers: Any) -> list[str]:
        seen = headers.getall("Set-Cookie", [])
        for header in seen:
            for name, morsel in SimpleCookie(header).items():
                path = morsel["path"] or "/"
                key = (site(url), path, name)
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(key, None)
                    continue
                self.cookies[key] = StoredCookie(
                    name, morsel.value, site(url), path, (morsel["samesite"] or "lax").lower(),
                    {k: str(v) for k, v in morsel.items() if v})
        return seen

    def _cookie_header(self, url: str, chain: set[str], top_level_get: bool) -> str:
        target = site(url)
        path = urlsplit(url).path or "/"
        same_site = chain == {target}
        sent = []
        for cookie in self.cookies.values():
            if cookie.host != target or not path.startswith(cookie.path):
                continue
            if cookie.samesite == "strict" and not same_site:
                continue
            if cookie.samesite == "lax" and not same_site and not top_level_get:
                continue
            sent.append(f"{cookie.name}={cookie.value}")
        return "; ".join(sent)

    async def navigate(self, url: str, initiator: str) -> Visit:
        """A top-level GET navigation started from a page at `initiator`."""
        chain = {site(initiator)}
        visit = Visit(url, [])
        for _ in range(10):
            if url.startswith(self.stop_at):
                visit.url = url
                return visit
            chain.add(site(url))
            headers = {"User-Agent": "sso-test-browser"}
            cookie = self._cookie_header(url, chain, top_level_get=True)
            if cookie:
                headers["Cookie"] = cookie
            visit.hops.append(url)
            async with self.http.get(url, headers=headers, allow_redirects=False) as response:
                visit.set_cookies += self._store(url, response.headers)
                visit.status = response.status
                if response.status not in REDIRECTS:
                    visit.url = url
                    return visit
                url = urljoin(url, response.headers["Location"])
        raise AssertionError(f"too many redirects: {visit.hops}")

    async def fetch(self, method: str, url: str, origin: str, **kwargs: Any) -> Any:
        """A request of the SPA. In a deployment the SPA and the API share a site, so
        every cookie of the API's host goes with it."""
        cookie = self._cookie_header(url, {site(url)}, top_level_get=False)
        headers = {"Origin": origin, **({"Cookie": cookie} if cookie else {}),
                   **kwargs.pop("headers", {})}
        response = await self.http.request(method, url, headers=headers,
                                           allow_redirects=False, **kwargs)
        self._store(url, response.headers)
        return response
