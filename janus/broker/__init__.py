"""RabbitMQ adapter (aio-pika): topology, consumers, and the confirmed publisher."""
