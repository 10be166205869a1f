"""Notifications: preferences, the outbox with dedup and batching, and the transports."""
