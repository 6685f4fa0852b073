"""End to end, for real: the engine, libvirt, guests, destroy. Two suites, each a package whose tests
are the phases of one lab it shares (its `run` fixture), in file order and, in a file, in the order
written: `ci/` (what CI runs: the seed's two modes and every lifecycle and host-safety promise) and
`deep/` (on demand, `./labctl test -m deep`: the lab's extensions). The helpers beside them are
shared by both: `lab.py` (the lab, its record, the checks on a deployed lab), `crash.py`, `faults.py`,
`seeing.py` and `hosts.py`."""
