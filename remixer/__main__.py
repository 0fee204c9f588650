"""`python -m remixer`: the same as the `musicgen-remix` command."""

import sys

from remixer.cli import main

sys.exit(main())
