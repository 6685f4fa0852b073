"""Host side of the lab: the Pulumi engine, the libvirt host and the base image.

Everything here runs on the machine that runs `pulumi`, before or around it; nothing here is
imported by the Pulumi program except the image cache key (so the program can find the image).
"""
