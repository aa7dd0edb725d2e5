"""Operator commands: the benchmark and its reference server, backup."""
