"""This host's readiness: the checks of `volar doctor` and the plan of `volar setup`."""
