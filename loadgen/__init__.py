"""Load generation, benchmarks and the scaling-policy simulator for Surge.

run     `surge loadgen run`: open-loop load against NATS and its accounting
report  tables, `report.json`, PNG plots
bench   `make bench`: ratios to bare baselines
sim     `surge loadgen simulate`: KEDA + HPA + pods on paper, running `scaler.policy`
cli     the `surge loadgen` commands (through the `surge.commands` entry point)
"""
