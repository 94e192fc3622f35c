"""Command line: ``python -m compress {profile,run,auto,predict,diff,history,models,train-baseline}``.

Errors a user can cause print one plain line to stderr and exit with status 2.
"""
import sys

from compress.cli import main

if __name__ == "__main__":
    sys.exit(main())
