"""The shoptet-worker runtime: Orchesty-style Shoptet processes on Kafka."""
