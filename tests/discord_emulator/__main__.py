"""Entry point for ``python -m tests.discord_emulator``."""

import sys

from .cli import main

sys.exit(main())
