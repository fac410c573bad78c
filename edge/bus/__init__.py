"""The bus: MQTT topics and payloads (the contract in DESIGN.md), outbox delivery."""
