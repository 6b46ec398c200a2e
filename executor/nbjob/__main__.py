from nbjob.early import main

raise SystemExit(main())
