from plasticollapse.cli import main

raise SystemExit(main())
