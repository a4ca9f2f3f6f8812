"""marshmallow schemas of request and response bodies; unknown fields are refused."""
