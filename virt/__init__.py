"""libvirt and SSH, as the lab's resources use them: XML rendering (pure), virsh and ssh calls."""
