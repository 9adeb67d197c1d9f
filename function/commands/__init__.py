"""`surge` command groups that are more than a few lines, each in a module of its own.

admin     operators' commands on the server: one connection, failures in one line
jobs      `surge submit` and `surge result`: publish images as jobs, read their results
nats      `surge nats`: the embedded nats-server (a cluster, or secured with tenants)
options   options several commands share (`--nats-url`, `--function`, the tenant)
outputs   a result's images as files (`--out`) or elided, never printed as base64
rollout   `surge models push|rollout|promote|rollback|status|list`: model versions live
tenants   `surge tenants add|list|remove`: tenants' job streams and quotas
workers   which workers of a function are alive, from their heartbeats

Nothing is imported here: `surge worker` loads none of these modules.
"""
