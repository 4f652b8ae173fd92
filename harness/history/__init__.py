"""The history store: every run's cells and latency samples in SQLite (embedded default) or PostgreSQL (a farm).

I/O at the edge of the pure judge: the judge's trends and gate rules take the series this store reads."""
