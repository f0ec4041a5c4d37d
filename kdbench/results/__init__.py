"""The run store: one JSON record per run, written atomically."""
