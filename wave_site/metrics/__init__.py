"""Operators' metrics: Wave's usage counters (`usage`, the `/v1alpha2/metrics/...` API) and Prometheus."""
