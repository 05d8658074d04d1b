"""runwatch's Grafana dashboards as code, built into ``grafana/dashboards/*.json``."""
