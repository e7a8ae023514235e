from rowforge.server.cli import main

raise SystemExit(main())
