"""Test job: write to stderr, then exit with the code given as argv[1]."""

import sys

print("not a channel line", flush=True)
print("Traceback (most recent call last):\n  boom: something went wrong", file=sys.stderr, flush=True)
sys.exit(int(sys.argv[1]))
