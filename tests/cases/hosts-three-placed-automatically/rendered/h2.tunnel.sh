# make
ip link add l2vx-a51146d3 type vxlan id 2224915 dstport 4789 local 192.0.2.2 ttl 64
ip link set l2vx-a51146d3 alias 'l2dsr:<owner>' mtu 1450 master l2dsr-a51146d3 up
bridge fdb append 00:00:00:00:00:00 dev l2vx-a51146d3 dst 192.0.2.1
bridge fdb append 00:00:00:00:00:00 dev l2vx-a51146d3 dst 192.0.2.3
# read
ip -d -j link show dev l2vx-a51146d3 2>/dev/null || echo '[]'; echo '#'; bridge -j fdb show dev l2vx-a51146d3 2>/dev/null || echo '[]'
# remove
ip link del l2vx-a51146d3
