"""The inputs. A source turns foreign input into validated events and never touches outputs."""
