"""Kafka side of the pipeline: topic administration and reading."""
