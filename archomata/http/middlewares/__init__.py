"""One concern per module; `archomata.app` lists them outermost first."""
