"""`python -m compiler` is the `flatgrad` command."""

import sys

from compiler.cli import main

sys.exit(main())
