#!/bin/sh
# Run once by the postgres image on an empty data folder. Change capture opens a replication connection from
# another container: the image's pg_hba.conf allows other hosts for ordinary connections only.
set -eu
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
