#!/bin/sh
# Entry point of the Cohort images. On first start it generates the bootstrap admin's
# password (unless COHORT_ADMIN_PASSWORD is given), keeps it in $COHORT_SECRETS_DIR
# (default /var/lib/cohort, a volume) with mode 600, and prints it once, as scripts/run
# does; later starts read it back. Then it runs the image's command.
set -eu
dir=${COHORT_SECRETS_DIR:-/var/lib/cohort}
umask 077
if [ -z "${COHORT_ADMIN_PASSWORD:-}" ]; then
  if [ ! -s "$dir/admin-password" ]; then
    mkdir -p "$dir"
    head -c 18 /dev/urandom | base64 | tr '+/' '-_' > "$dir/admin-password"
    echo "cohort: first start: the bootstrap admin ${COHORT_ADMIN_EMAIL:-admin@cohort.local} has the password $(cat "$dir/admin-password")" >&2
    echo "cohort: (kept in $dir/admin-password; used only while no admin exists)" >&2
  fi
  COHORT_ADMIN_PASSWORD=$(cat "$dir/admin-password")
  export COHORT_ADMIN_PASSWORD
fi
exec "$@"
