"""Host side of the lab (`./labctl`): the Pulumi engine, the libvirt host and the base image.

Everything here runs on the machine that runs `pulumi`, before or around it; the Pulumi program
imports none of it (tests/test_layers.py checks): what the program needs of the host set-up (the
image's key and paths, what setup found) is runtime/hostfacts.py.
"""
