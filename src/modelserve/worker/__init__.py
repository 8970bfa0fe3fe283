"""Celery workers: a thin task around the model runtime, answering on the caller's reply queue."""
