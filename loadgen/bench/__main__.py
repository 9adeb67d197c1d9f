"""`python -m loadgen.bench`: the benchmark suite (`make bench`)."""

from loadgen.bench.suite import main

main()
