"""Benchmarks: figures measured on real Redis and PostgreSQL on 127.0.0.1, printed, never asserted."""
