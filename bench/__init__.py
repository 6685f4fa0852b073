"""The benchmark: run the load tool on the clients, parse its output, report it like the seed."""
