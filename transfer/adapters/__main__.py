import sys

from mocobench.transfer.adapters.cli import main

sys.exit(main())
