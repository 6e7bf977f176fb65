"""`python -m bench.cli`: the `bench` command, for subprocesses that need this interpreter."""

from bench.cli import main

main()
