"""mmq's benchmarks (not part of the test suite): `make bench` runs them side by side on this
machine and prints a markdown table of ratios; `docs/benchmarks.md` keeps the latest one."""
