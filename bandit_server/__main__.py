"""`python -m bandit_server` is the `bandit-server` command."""

import sys

from bandit_server.cli import main

sys.exit(main())
