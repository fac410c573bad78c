"""The blue-loop server (off-device): job intake over MQTT, reasoners (`local`, `openai`), results.

Run it as `python -m blueloop --mqtt URL ...` (blueloop/cli.py); the contract is DESIGN.md's
"Blue-loop job (contract)"."""
