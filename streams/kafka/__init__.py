"""The Kafka shell: the Faust app, the batch hand-over, topic admin, security, broker quirks."""
