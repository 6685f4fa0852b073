# One VM's counters, each time the benchmark asks (a line on stdin), until `quit` or the end of input.
# Run by bash under sudo, once per benchmark (bench/counters.py Readers). Under emulation every
# process a guest starts costs it CPU, and a 25-web lab's guests share the host's cores, so a
# reading starts no process but a web's one request to its stub_status: /proc/stat, eth0's drops,
# TCP listen drops and the socket summary are read with `read`, and a web's served requests are
# counted from the access log's new lines only (the only use of the count is its difference
# between two readings), read through a descriptor kept open from the reader's start.
vip_tcp=$1 # a client: the VIP and port as /proc/net/tcp writes them (its open connections count)
web=$2     # a web: nginx's counts

# Where ListenOverflows and ListenDrops are among TcpExt's fields (the header does not change).
over=999 drops=999 # past the last field: 0 when the kernel has no such counter
while read -r k rest; do
  [ "$k" = TcpExt: ] || continue
  i=1
  for name in $rest; do
    case $name in ListenOverflows) over=$i ;; ListenDrops) drops=$i ;; esac
    i=$((i + 1))
  done
  break
done </proc/net/netstat

log=/var/log/nginx/access.log served=0 pending=
new_lines() { # count /dummy_file in what nginx wrote since the last reading (a line cut short waits)
  local line
  while IFS= read -r -u 4 line; do
    line=$pending$line pending=
    [[ $line == *' /dummy_file '* ]] && served=$((served + 1))
  done
  pending=$pending$line
}
if [ -n "$web" ] && exec 4<"$log"; then
  cat <&4 >/dev/null # from now on: cat reads to the end, and the descriptor's offset is shared
fi

while read -r ask; do
  [ "$ask" = quit ] && exit 0
  read -r _ u n s i w q sq st _ </proc/stat
  echo "cpu $((u + n + s + i + w + q + sq + st)) $((i + w))"
  read -r rx </sys/class/net/eth0/statistics/rx_dropped
  read -r tx </sys/class/net/eth0/statistics/tx_dropped
  echo "drops $rx $tx"
  header=
  while read -r k rest; do
    [ "$k" = TcpExt: ] || continue
    if [ -n "$header" ]; then
      set -- $rest
      echo "listen ${!drops:-0} ${!over:-0}"
      break
    fi
    header=1
  done </proc/net/netstat
  if [ -n "$web" ]; then
    if ! [ "$log" -ef /dev/fd/4 ]; then # rotated: the rest of the old file, then the new one from its start
      new_lines 2>/dev/null
      exec 4<"$log" && pending=
    fi
    new_lines 2>/dev/null
    echo "served $served"
    accepted= next=
    if exec 3<>/dev/tcp/127.0.0.1/80; then
      printf 'GET /l2dsr-status HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
      while IFS= read -r line <&3; do
        line=${line%$'\r'}
        if [ -n "$next" ]; then
          set -- $line
          accepted=$1
          break
        fi
        [ "$line" = "server accepts handled requests" ] && next=1
      done
      exec 3<&-
    fi
    echo "accepted $accepted"
  fi
  [ -n "$vip_tcp" ] && echo "open $(grep -c " $vip_tcp 01 " /proc/net/tcp)"
  while read -r k rest; do
    [ "$k" = TCP: ] && {
      echo "tcp $rest"
      break
    }
  done </proc/net/sockstat
  echo @@end
done
