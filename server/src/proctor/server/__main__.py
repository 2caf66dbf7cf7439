"""`python -m server ...` is the `proctor` console script."""

import sys

from .cli import main

sys.exit(main())
