"""What the harness reads and writes, as plain dataclasses validated when loaded: recipes, targets, runtime
configurations, model interfaces, result rows and the run directory. No I/O beyond reading the files."""
