"""lifecycle-triggers: a Kafka-native trigger processor for customer retention."""

__version__ = "0.1.0"
