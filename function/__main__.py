"""`python -m function` runs the worker (or any `surge` subcommand given); `run` is also
the `surge` command."""

import sys

from function.startup import importing

__all__ = ["run"]


def run() -> None:
    """The `surge` command, its imports made with the garbage collector paused
    (`function.startup`)."""
    importing()
    from function.cli import main

    main()


if __name__ == "__main__":
    if len(sys.argv) == 1:
        sys.argv.append("worker")
    run()
