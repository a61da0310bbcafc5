import sys

from mocobench.transfer.cli import main

sys.exit(main())
