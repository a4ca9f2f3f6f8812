"""The HTTP layer: JSON bodies and problem answers, parameters, pagination, the text
rules, OpenAPI, CORS, the server, and the middlewares (one concern per module)."""
