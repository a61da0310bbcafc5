import sys

from core.data.cli import main

sys.exit(main())
