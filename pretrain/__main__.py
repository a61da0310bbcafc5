import sys

from mocobench.pretrain.cli import main

sys.exit(main())
