"""Running an experiment: the sweep over its runs, claims that divide them between processes,
parallel workers, signals, progress display and the status of a results folder."""
