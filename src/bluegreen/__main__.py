"""`python -m bluegreen`: the CLI (bluegreen.cli)."""

import sys

from .cli import main

sys.exit(main())
