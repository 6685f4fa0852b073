"""What `./labctl status`, `capture` and `graph` show, pure: the status table from what libvirt and the
guests answered, tcpdump's command lines, and the lab drawn as Graphviz DOT from a result's counters."""
