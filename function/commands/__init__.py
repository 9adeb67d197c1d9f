"""`surge` command groups that are more than a few lines, each in a module of its own.

nats      `surge nats`: the embedded nats-server (a cluster, or secured with tenants)
tenants   `surge tenants add|list|remove`: tenants' job streams and quotas
"""

from __future__ import annotations

from function.commands.nats import nats_command
from function.commands.tenants import tenants_app

__all__ = ["nats_command", "tenants_app"]
