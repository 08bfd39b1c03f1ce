"""`python -m builder`: the same as the `qga-builder` console script."""

import sys

from builder.cli import main

sys.exit(main())
