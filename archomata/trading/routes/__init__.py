"""The trading routes, one module per resource."""
