"""`python -m function` runs the worker (or any `surge` subcommand given)."""

import sys

from function.cli import main

if len(sys.argv) == 1:
    sys.argv.append("worker")
main()
