# One VM's counters, each time the benchmark asks (a line on stdin), until `quit` or the end of input.
# Shell builtins only, where they can be (each process started costs a guest under emulation):
# /proc/stat, eth0's drops, TCP listen drops and the TCP socket summary are read with `read`;
# a web's nginx counts cost one grep and one request to its stub_status over bash's /dev/tcp.
vip_tcp=$1  # a client: the VIP and port as /proc/net/tcp writes them (its open connections count)
web=$2      # a web: nginx's counts
while read -r ask; do
  [ "$ask" = quit ] && exit 0
  read -r _ u n s i w q sq st _ < /proc/stat
  echo "cpu $((u + n + s + i + w + q + sq + st)) $((i + w))"
  read -r rx < /sys/class/net/eth0/statistics/rx_dropped
  read -r tx < /sys/class/net/eth0/statistics/tx_dropped
  echo "drops $rx $tx"
  h= v=
  while read -r k rest; do
    [ "$k" = TcpExt: ] || continue
    if [ -z "$h" ]; then h=$rest; else v=$rest; fi
  done < /proc/net/netstat
  names=($h) vals=($v) ld=0 lo=0
  for j in "${!names[@]}"; do
    case ${names[$j]} in ListenDrops) ld=${vals[$j]} ;; ListenOverflows) lo=${vals[$j]} ;; esac
  done
  echo "listen $ld $lo"
  if [ -n "$web" ]; then
    echo "served $(grep -c ' /dummy_file ' /var/log/nginx/access.log)"
    accepted= next=
    if exec 3<>/dev/tcp/127.0.0.1/80; then
      printf 'GET /l2dsr-status HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
      while IFS= read -r line <&3; do
        line=${line%$'\r'}
        if [ -n "$next" ]; then set -- $line; accepted=$1; break; fi
        [ "$line" = "server accepts handled requests" ] && next=1
      done
      exec 3<&-
    fi
    echo "accepted $accepted"
  fi
  [ -n "$vip_tcp" ] && echo "open $(grep -c " $vip_tcp 01 " /proc/net/tcp)"
  while read -r k rest; do
    [ "$k" = TCP: ] && { echo "tcp $rest"; break; }
  done < /proc/net/sockstat
  echo @@end
done
