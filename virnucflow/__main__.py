import sys

from virnucflow.cli import main

sys.exit(main())
