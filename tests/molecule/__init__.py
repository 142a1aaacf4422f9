"""Shared molecule playbooks and the helper that runs a scenario's stand-in services."""
