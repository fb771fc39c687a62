# Runs inside the QEMU guest as /test.sh (busybox sh); results go to fd 3 (the second serial
# port). Busybox runs its own applets before PATH, so iproute2 and ipvsadm go by full path.
IP=/sbin/ip
IPVSADM=/usr/sbin/ipvsadm
AGENT=/usr/sbin/lvs-agent
echo 0 > /tmp/failures
ok() { echo "ok $*" >&3; }
fail() {
    echo "FAIL $*" >&3
    echo $(( $(cat /tmp/failures) + 1 )) > /tmp/failures
}
section() {
    name=$1; shift
    echo "=== $name" >&3
    "$@" >&3 2>&1
    echo "=== end" >&3
}
inns() { ns=$1; shift; nsenter --net=/run/netns/$ns -- "$@"; }
# Bounded poll: until CMD succeeds, at most $1 tenths of a second.
poll() {
    n=$1; shift
    while [ "$n" -gt 0 ]; do
        if "$@" >/dev/null 2>&1; then return 0; fi
        usleep 100000
        n=$((n - 1))
    done
    return 1
}
# The table without counters, to compare before and after drift.
table() { $IPVSADM -Ln | awk '/^(TCP|UDP)/ {print} /->/ && $2 != "RemoteAddress:Port" {print $2, $3, $4}'; }

# --- Topology: director in the root namespace; client on d0; NAT real servers rs1, rs2 and
# TUN real servers rs3, rs4 each on their own veth, routed through the director.
echo 1 > /proc/sys/net/ipv4/ip_forward
for f in /proc/sys/net/ipv4/conf/all/rp_filter /proc/sys/net/ipv4/conf/default/rp_filter; do echo 0 > $f; done
# TUN replies carry the VIP as source and cross the director: local to it, so accepted only
# with accept_local.
echo 1 > /proc/sys/net/ipv4/conf/all/accept_local
echo 1 > /proc/sys/net/ipv4/conf/default/accept_local
$IP link set lo up
for ns in client rs1 rs2 rs3 rs4 rs5 sw; do $IP netns add $ns; done
# One L2 segment (a bridge in namespace sw) for client, director and the DR real server rs5,
# as direct routing needs; the XDP program runs on the director's d0.
inns sw $IP link add br0 type bridge
inns sw $IP link set br0 up
$IP link add d0 type veth peer name p-d netns sw
inns sw $IP link add p-c type veth peer name c0 netns client
inns sw $IP link add p-r5 type veth peer name eth0 netns rs5
for p in p-d p-c p-r5; do inns sw $IP link set $p master br0 up; done
$IP addr add 10.7.0.1/24 dev d0
$IP addr add 10.7.0.100/32 dev d0
$IP addr add 10.7.0.101/32 dev d0
$IP addr add 10.7.0.102/32 dev d0
$IP link set d0 up
# The client's TCP checksums must be complete on the wire: XDP forwards the frame as it is.
inns client ethtool -K c0 tx off >/dev/null
inns client $IP addr add 10.7.0.2/24 dev c0
inns client $IP link set c0 up
inns client $IP link set lo up
inns client $IP route add default via 10.7.0.1
for i in 1 2 3 4; do
    $IP link add d$i type veth peer name eth0 netns rs$i
    $IP addr add 10.7.$i.1/24 dev d$i
    $IP link set d$i up
    inns rs$i $IP addr add 10.7.$i.2/24 dev eth0
    inns rs$i $IP link set eth0 up
    inns rs$i $IP link set lo up
    inns rs$i $IP route add default via 10.7.$i.1
    mkdir -p /www/rs$i
    echo rs$i > /www/rs$i/index.html
done
for i in 3 4; do
    # IPIP decapsulation: the VIP on tunl0 (ipip.ko makes one in every namespace).
    inns rs$i $IP link set tunl0 up
    inns rs$i $IP addr add 10.7.0.101/32 dev tunl0
    inns rs$i sh -c 'for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done'
done
# rs5: direct routing, the VIP on lo, ARP for it left to the director.
inns rs5 $IP addr add 10.7.0.50/24 dev eth0
inns rs5 $IP link set eth0 up
inns rs5 $IP link set lo up
inns rs5 $IP addr add 10.7.0.102/32 dev lo
inns rs5 sh -c 'for i in all eth0 lo; do echo 1 > /proc/sys/net/ipv4/conf/$i/arp_ignore; echo 2 > /proc/sys/net/ipv4/conf/$i/arp_announce; done'
mkdir -p /www/rs5
echo rs5 > /www/rs5/index.html
inns rs5 httpd -p 80 -h /www/rs5
inns rs1 httpd -p 8080 -h /www/rs1
inns rs2 httpd -p 8080 -h /www/rs2
inns rs3 httpd -p 80 -h /www/rs3
inns rs4 httpd -p 80 -h /www/rs4
poll 50 sh -c "nsenter --net=/run/netns/rs4 -- netstat -ltn | grep -q ':80 '" || fail "responders up"

# --- What the real ipvsadm sends (libipvs over libnl), captured with strace before the agent
# runs: the host compares our codec's bytes with these.
cap() { name=$1; shift; section "capture-$name" strace -f -e trace=sendmsg -e write=all $IPVSADM "$@"; }
cap new-service -A -t 10.7.0.210:80 -s rr
cap new-dest-tun -a -t 10.7.0.210:80 -r 10.7.3.9:80 -i -w 3
cap new-service-persistent -A -u 10.7.0.211:53 -s wlc -p 300 -M 255.255.255.0
cap new-dest-masq -a -u 10.7.0.211:53 -r 10.7.1.9:53 -m -w 2 -x 100 -y 10
cap set-dest -e -u 10.7.0.211:53 -r 10.7.1.9:53 -m -w 5
cap del-dest -d -u 10.7.0.211:53 -r 10.7.1.9:53
cap del-service -D -u 10.7.0.211:53
cap set-timeouts --set 901 121 301
$IPVSADM -C

# --- The agent.
$AGENT run -f /k.conf -i d0 --xdp-mode generic --no-pin --metrics-address 127.0.0.1:9469 --resolve-wait 0 \
    --ipvs-check 1 > /tmp/agent.log 2>&1 &
AGENT_PID=$!
if poll 300 sh -c "[ \$($IPVSADM -Ln | grep -c -- '-> 10\.') -ge 5 ]"; then ok "agent programmed IPVS"; else fail "agent programmed IPVS"; fi
poll 100 test -S /run/lvs-agent/d0.sock || fail "agent socket"
section ipvsadm $IPVSADM -Ln
section timeouts $IPVSADM -L --timeout
section list $AGENT list -n

# --- Traffic through NAT and TUN.
echo "=== traffic-nat" >&3
for i in 1 2 3 4 5 6 7 8 9 10; do inns client timeout 5 wget -q -O - http://10.7.0.100/ >&3 2>&1 || echo "no answer" >&3; done
echo "=== end" >&3
echo "=== traffic-tun" >&3
for i in 1 2 3 4 5 6 7 8 9 10; do inns client timeout 5 wget -q -O - http://10.7.0.101/ >&3 2>&1 || echo "no answer" >&3; done
echo "=== end" >&3
# And through XDP (DR) once the agent knows rs5's MAC.
poll 100 sh -c "$AGENT status | grep -q '10.7.0.50:80 .* up'" || fail "DR real server's MAC resolved"
echo "=== traffic-dr" >&3
for i in 1 2 3 4 5 6 7 8 9 10; do inns client timeout 5 wget -q -O - http://10.7.0.102/ >&3 2>&1 || echo "no answer" >&3; done
echo "=== end" >&3
# Counters reach netlink through IPVS's 2 s estimator: poll until they show.
nat_conns() { $IPVSADM -Ln --stats | awk '$2 == "10.7.0.100:80" {print $3}'; }
poll 100 sh -c "[ \"\$($IPVSADM -Ln --stats | awk '\$2 == \"10.7.0.101:80\" {print \$3}')\" = 10 ] && [ \"\$($IPVSADM -Ln --stats | awk '\$2 == \"10.7.0.100:80\" {print \$3}')\" = 10 ]" \
    || fail "IPVS counters reached 10 connections per service (NAT: $(nat_conns))"
section stats $IPVSADM -Ln --stats
section list-stats $AGENT list -n --stats
section list-json $AGENT list --json
section status $AGENT status
section metrics wget -q -O - http://127.0.0.1:9469/metrics

# --- Drift: entries removed, added and changed behind the agent's back are put right.
table > /tmp/before
LOG_AT=$(( $(wc -l < /tmp/agent.log) + 1 ))
# One ipvsadm process for all four changes (-R reads rules from stdin), so that they land
# together between two of the agent's checks; the agent's log shows the repair (asserted on
# the host: exactly these four requests).
$IPVSADM -R <<'RULES'
-d -t 10.7.0.100:80 -r 10.7.2.2:8080
-a -t 10.7.0.100:80 -r 10.7.9.9:8080 -m -w 1
-e -t 10.7.0.101:80 -r 10.7.4.2:80 -i -w 7
-A -t 10.7.0.200:80 -s rr
RULES
if poll 100 sh -c 'cmp -s /tmp/before /tmp/now; r=$?; /usr/sbin/ipvsadm -Ln | awk "/^(TCP|UDP)/ {print} /->/ && \$2 != \"RemoteAddress:Port\" {print \$2, \$3, \$4}" > /tmp/now; exit $r'; then
    ok "drift repaired"
else
    fail "drift repaired"
fi
section after-drift $IPVSADM -Ln
section drift-log tail -n +$LOG_AT /tmp/agent.log

# --- Health: a stopped responder fails its TCP_CHECK and leaves the kernel's table; started
# again, it comes back.
RS2_PID=$(ps -o pid,args | awk '/httpd/ && /\/www\/rs2/ {print $1}')
[ -n "$RS2_PID" ] || fail "rs2's responder found"
kill $RS2_PID
if poll 200 sh -c "! $IPVSADM -Ln | grep -q '10.7.2.2:8080'"; then ok "failed real server removed"; else fail "failed real server removed"; fi
section after-failure $IPVSADM -Ln
section status-failure $AGENT status
inns rs2 httpd -p 8080 -h /www/rs2
if poll 200 sh -c "$IPVSADM -Ln | grep -q '10.7.2.2:8080'"; then ok "recovered real server back"; else fail "recovered real server back"; fi

# --- Reload (SIGHUP): only the difference reaches the kernel.
LOG_AT=$(( $(wc -l < /tmp/agent.log) + 1 ))
cp /k-reload.conf /k.conf
kill -HUP $AGENT_PID
if poll 200 sh -c "$IPVSADM -Ln | grep -q '10.7.0.101:80 rr'"; then ok "reload applied"; else fail "reload applied"; fi
section after-reload $IPVSADM -Ln
section reload-log tail -n +$LOG_AT /tmp/agent.log

kill $AGENT_PID
poll 100 sh -c "! kill -0 $AGENT_PID" || fail "agent stopped on SIGTERM"
section agent-log cat /tmp/agent.log
