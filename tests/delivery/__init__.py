"""Delivery tests: git-over-SSH against real hosts made from network namespaces."""
