"""Helpers for the tests only: a real redis-server, one fake clock, one builder of openai errors."""
