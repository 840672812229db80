"""``python -m bench``: what ``bench/run`` executes once the tools are installed."""

from bench.main import main

raise SystemExit(main())
