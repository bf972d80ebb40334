"""Runnable examples of the seed's three patterns."""
