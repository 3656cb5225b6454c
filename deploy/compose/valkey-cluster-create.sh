#!/bin/sh
# One-shot: join the six valkey nodes into a cluster of 3 masters, each with 1 replica. Idempotent: a
# cluster that is already up is left alone, so `docker compose up` may run it again.
set -eu
if valkey-cli -h valkey-1 cluster info | grep -q '^cluster_state:ok'; then
    echo "cluster already up"; exit 0
fi
# CLUSTER MEET takes IP addresses; the nodes announce their service names (cluster-announce-hostname),
# so redirects (MOVED/ASK) name hosts that resolve inside the compose network.
nodes=""
for i in 1 2 3 4 5 6; do
    nodes="$nodes $(getent hosts "valkey-$i" | awk '{print $1}'):6379"
done
# shellcheck disable=SC2086 # one word per node
valkey-cli --cluster create $nodes --cluster-replicas 1 --cluster-yes
until valkey-cli -h valkey-1 cluster info | grep -q '^cluster_state:ok'; do sleep 1; done
echo "cluster up"
