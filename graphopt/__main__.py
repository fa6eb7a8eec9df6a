"""`python -m graphopt` runs the `graphopt` command."""

import sys

from graphopt.cli import main

sys.exit(main())
