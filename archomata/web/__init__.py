"""The HTTP layer's own room: what the middlewares need to know about a route."""
