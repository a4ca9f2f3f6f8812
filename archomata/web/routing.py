"""What the middlewares need to know about the matched route."""

from __future__ import annotations

from aiohttp import web


def route_name(request: web.Request) -> str:
    """The route's path template (`/api/v1/orders/{order_id}`), never the raw path, so
    that logs and metric labels neither explode in cardinality nor carry ids."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"
