"""An app module that cannot be imported (crash-loop tests)."""

raise RuntimeError("this application cannot start")
