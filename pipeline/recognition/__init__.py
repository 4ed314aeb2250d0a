"""Cameras publish frames; workers read plates from them and publish reads."""
