"""Speed measurements (ratios, not timed tests); each module has run(quick) and main()."""
