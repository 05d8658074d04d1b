"""The outputs: the metric catalogue, its Prometheus and OTel renderings, and spans."""
