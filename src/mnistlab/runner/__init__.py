"""Running a study: plan it against the store, claim runs, train them, write results as they arrive
(``driver``); where the runs execute (``executors``: inline or local processes)."""
