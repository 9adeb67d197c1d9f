"""`surge loadgen run`: an open-loop load run against NATS, and its accounting.

profiles   rate curves (constant, step, ramp, marketing-spike, CSV) and Poisson arrivals
generator  publishes on schedule, collects results, samples the backlog
runner     the command's body: embedded stack or a given server, then the report
ledger     every job's fate: answered, errored, dead-lettered, missing
monitor    backlog and heartbeat probes, dead letters
timeline   the per-second timeline of a run
records    the run report format (`RunReport`)
failover   a fault run: kill the jobs stream's leader mid-load (`python -m loadgen.run.failover`)
"""
