"""Entry point of `python -m sandbox`; see sandbox/cli.py and sandbox/README.md."""

import sys

from sandbox.cli import main

sys.exit(main())
