"""`python -m ptqlib ...`: the command line (ptqlib.cli)."""
import sys

from ptqlib.cli import main

sys.exit(main())
