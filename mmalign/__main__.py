from mmalign.cli import main

raise SystemExit(main())
