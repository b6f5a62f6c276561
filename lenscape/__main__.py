"""`python -m lenscape ...` is the `lenscape` command."""

import sys

from lenscape.cli import main

sys.exit(main())
