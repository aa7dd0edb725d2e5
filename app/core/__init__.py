"""The use cases: generate, record, fetch, list; limits, resilience, messages, metrics."""
