#!/bin/sh
# The demo network's one-shot set-up: the `network` service of compose.yaml runs it (as root) before
# the nodes start. It creates the operator's keys (once), each node's identity (once), admits each
# node to the network map with the trade app, and gives each node the operator's public key.
# Running it again changes nothing but the map entries' serial numbers: no key is ever replaced.
set -eu
network=/network
[ -f "$network/operator.pub" ] || parley network init --dir "$network"
for node in seller buyer notary; do
    dir="/nodes/$node"
    key="$(parley node init --name "$node" --data-dir "$dir")"
    parley network admit --dir "$network" "$node" "$key" --app parley.apps.trade
    cp "$network/operator.pub" "$dir/operator.pub"
    chown -R 10001:10001 "$dir" # the image's user
done
parley network list --dir "$network"
