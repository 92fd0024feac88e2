"""`python -m janus.cli`, as the `janus` command."""

import sys

from janus.cli import main

sys.exit(main())
