"""Load generation, benchmarks and the scaling-policy simulator for Surge.

profiles     rate curves (constant, step, ramp, marketing-spike, CSV) and Poisson arrivals
generator    the open-loop run against NATS; ledger, monitor, timeline: its accounting
records      the run report format; report, plots: files, tables, PNGs
cli, runner  `surge loadgen run | compare | simulate`
sim/         the discrete-event KEDA + HPA + pods model; simcli: its command
bench        `make bench`: ratios to bare baselines (baselines, benchsurge, benchprofile)
"""
