"""``python -m morse ...`` (and ``torchrun -m morse train ...``) runs the command line."""

import sys

from morse.cli.main import main

sys.exit(main())
