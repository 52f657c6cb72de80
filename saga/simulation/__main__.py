from saga.simulation.cli import main

raise SystemExit(main())
