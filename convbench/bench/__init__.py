"""The experiment harness: sweeps, timing, memory, results, plots and reports."""
