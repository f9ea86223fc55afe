"""Observability and process plumbing: metrics, the HTTP endpoints, logging, signals."""
