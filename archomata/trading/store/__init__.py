"""The trading SQL, one module per table family."""
