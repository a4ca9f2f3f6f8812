"""One module per domain: SQL constants beside the typed functions that run them."""
