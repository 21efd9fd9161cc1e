"""Training: batching, the Trainer wiring and (later) the staged curriculum."""
