"""Broker tests: RabbitMQ over TLS between real hosts, and what a worker host's account may do."""
