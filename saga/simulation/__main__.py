from saga.cli.simulate import main

raise SystemExit(main())
