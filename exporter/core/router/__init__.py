"""Event-router mappings: any JSON event stream with a type field, as runwatch telemetry."""
