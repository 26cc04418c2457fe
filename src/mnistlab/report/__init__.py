"""Tables and reports, read from the store. Never imports torch."""
