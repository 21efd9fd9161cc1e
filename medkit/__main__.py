from medkit.cli import main

raise SystemExit(main())
