from ae_batch.cli import main

raise SystemExit(main())
