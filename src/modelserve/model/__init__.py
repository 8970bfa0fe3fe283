"""Models: data, training, bundles, legacy import, inference runtime (no web, no queue)."""
