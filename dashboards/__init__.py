"""Grafana dashboards and Prometheus rules of the cluster, generated and checked from Python."""
