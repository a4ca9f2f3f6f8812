"""One module per resource, each with its own RouteTableDef, registered by create_app."""
