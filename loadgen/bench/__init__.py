"""`make bench`: Surge's throughput, latency and start-up as ratios to bare baselines in one run.

suite      the benchmark command: every figure beside its baseline
baselines  the bare baselines: raw ONNX Runtime, a bare nats-py loop, a bare cold start
floor      bare nats-py with Surge's guarantees: a job's round trip, and a draining loop
wake       how much slower a step runs after an idle gap than back to back
workers    Surge's side: `surge worker` processes against an embedded nats-server
profile    where the time goes in one worker (a sampling profile of the job path)
hotspots   a profile flattened to its top functions
record     the benchmark's JSON record
coldstart  `surge worker` start-to-ready against a bare session (`-m loadgen.bench.coldstart`)
tls        round trips with and without mutual TLS + password (`-m loadgen.bench.tls`)
gil        CPU stages alone and beside a busy Python thread (`-m loadgen.bench.gil`)
"""
