#!/usr/bin/env bash
# Start a MariaDB server on 127.0.0.1 for the test suite, idempotently: installs mariadb-server when
# missing (root), starts mysqld_safe when the server does not answer, creates the test database and
# an application user. Prints the SQLAlchemy URL on stdout.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DB="${CRATER_MYSQL_DB:-crater_test}"
USER_="${CRATER_MYSQL_USER:-crater}"
PASS="${CRATER_MYSQL_PASSWORD:-crater-test-pw}"
PORT="${CRATER_MYSQL_PORT:-3306}"

ensure_apt mariadb-server mariadb-client >&2

if ! mariadb-admin ping --silent >/dev/null 2>&1; then
    log "starting MariaDB on 127.0.0.1:$PORT"
    install -d -o mysql -g mysql /run/mysqld
    if [ ! -d /var/lib/mysql/mysql ]; then
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    fi
    (setsid mysqld_safe --user=mysql --bind-address=127.0.0.1 --port="$PORT" \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
        >/dev/null 2>&1 &)
    for _ in $(seq 1 150); do
        mariadb-admin ping --silent >/dev/null 2>&1 && break
        sleep 0.2
    done
    mariadb-admin ping --silent >/dev/null 2>&1 || { log "MariaDB did not start"; exit 1; }
fi

mariadb -uroot <<SQL
CREATE DATABASE IF NOT EXISTS \`$DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE DATABASE IF NOT EXISTS \`${DB}_bench\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS '$USER_'@'127.0.0.1' IDENTIFIED BY '$PASS';
GRANT ALL PRIVILEGES ON \`$DB\`.* TO '$USER_'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`${DB}_bench\`.* TO '$USER_'@'127.0.0.1';
-- one database per pytest-xdist worker (<db>_gw0, <db>_gw1, ...): the suite creates them
GRANT ALL PRIVILEGES ON \`${DB//_/\\_}\\_gw%\`.* TO '$USER_'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL

echo "mysql+pymysql://$USER_:$PASS@127.0.0.1:$PORT/$DB?charset=utf8mb4"
