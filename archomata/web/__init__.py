"""The HTTP library the domains build on: JSON bodies and problem answers, parameters,
pagination, the fields that apply the text rules (archomata.text_rules), OpenAPI, a
connection's cut. It imports no domain: the request pipeline that does (the middlewares,
the server, CORS) is archomata.http."""
