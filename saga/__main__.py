from saga.cli import main

raise SystemExit(main())
