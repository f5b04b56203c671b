"""Core types and configs: errors, device profiles, candidate, host facts, I/O contract, cache. Imports nothing above it."""
