"""Mirrors: an image copied to a build repository as it is, registry to registry (registry.push), without a build.

A mirror is a `Build` row of kind `mirror` (id `mr-<containerId>_<n>`): it has the durable-job life of a build
(claim, heartbeat, reaper, live log, page, admin), and its own record at `/v1alpha1/mirrors/{id}`.
"""
