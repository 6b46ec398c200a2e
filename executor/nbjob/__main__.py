from nbjob.cli import main

raise SystemExit(main())
