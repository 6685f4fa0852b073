"""The Pulumi engine pieces the lab ships or builds: the Python language host and provider launcher."""
