"""Running the whole stack on one machine: a private RabbitMQ node, workers, the web server."""
