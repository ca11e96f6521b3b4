"""Resource configs (Runpod's field names) and the hardware enums."""
